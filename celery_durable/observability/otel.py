"""OpenTelemetry tracing: ``durable.use(OTelTracing(tracer_provider))``.

A span per job execution (``durable.job <task>``, kind CONSUMER, messaging attributes)
with a child span per call that runs (``durable.call <name>``); replayed calls are not
emitted: they did not run. Errors are recorded on the span that saw them.

The enqueuer's trace context travels with the job in a message header
(``durable_trace``) that is also stored with the job's row, so every execution (after a
crash, a retry, a requeue by the sweeper) continues the same trace. The job spans link
to the enqueuer's span as their parent; with opentelemetry-instrumentation-celery
installed as well, its ``run/<task>`` span is the current span when the job starts and
becomes the job span's parent, so no span is duplicated or orphaned.

Needs the ``otel`` extra: ``pip install "celery-durable[otel]"``.
"""

from __future__ import annotations

import threading
from typing import Any

from .hooks import CallInfo, JobInfo, Middleware, Outcome

HEADER = "durable_trace"


class OTelTracing(Middleware):
    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("celery_durable")
        self._local = threading.local()

    # -- enqueue: the header that carries the context -------------------------------------

    def message_headers(self) -> dict[str, str]:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {HEADER: carrier["traceparent"]} if "traceparent" in carrier else {}

    # -- spans ---------------------------------------------------------------------------

    def before_job(self, job: JobInfo) -> None:
        from opentelemetry import context, propagate, trace

        parent = context.get_current()
        if job.trace_parent and not trace.get_current_span().get_span_context().is_valid:
            parent = propagate.extract({"traceparent": job.trace_parent})
        span = self.tracer.start_span(
            f"durable.job {job.task}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "celery",
                "messaging.operation": "process",
                "messaging.destination.name": job.queue or "",
                "messaging.message.id": job.id,
                "durable.execution": job.execution or 0,
            },
        )
        self._local.job = (span, context.attach(trace.set_span_in_context(span)))
        self._local.calls = []

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        from opentelemetry import context, trace

        held = getattr(self._local, "job", None)
        if held is None:  # the sweeper's report: no execution, no span
            return
        while getattr(self._local, "calls", None):  # a call the execution died in
            self._end_call(None, retrying=False)
        span, token = held
        span.set_attribute("durable.outcome", outcome.state)
        if outcome.error is not None and outcome.state in ("failed", "dead", "retrying"):
            span.record_exception(outcome.error)
        if outcome.state in ("failed", "dead"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(outcome.error)))
        span.end()
        context.detach(token)
        self._local.job = None

    def before_call(self, job: JobInfo, call: CallInfo) -> None:
        from opentelemetry import context, trace

        span = self.tracer.start_span(
            f"durable.call {call.name}",
            attributes={
                "durable.position": call.position,
                "durable.attempt": call.attempt,
                "messaging.message.id": job.id,
            },
        )
        self._local.calls.append((span, context.attach(trace.set_span_in_context(span))))

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        self._end_call(None, retrying=False)

    def on_call_error(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        self._end_call(error, retrying=call.retrying)

    def _end_call(self, error: BaseException | None, *, retrying: bool) -> None:
        from opentelemetry import context, trace

        calls = getattr(self._local, "calls", None)
        if not calls:
            return
        span, token = calls.pop()
        if error is not None:
            span.record_exception(error)
            span.set_attribute("durable.will_retry", retrying)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        span.end()
        context.detach(token)
