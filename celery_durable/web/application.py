"""The dashboard as an ASGI app (Starlette): HTML pages, their live fragments, the JSON API
and the actions, all reading and writing through the ``Durable`` management API."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from markupsafe import escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..app import Durable
from ..errors import DurableError, JobNotFound, JobStateError, ScheduleNotFound
from ..operations.events import Event, read_events
from . import chart
from .actions import ACTIONS, ActionError, audit
from .filters import FilterError, JobQuery, field_text
from .jsonable import jsonable
from .security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    Auth,
    Operator,
    authenticate,
    csrf_token,
    csrf_valid,
    new_nonce,
    same_origin,
)

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
CHART_MINUTES = 60
_EVENT_PAGES = 20
PING_EVERY = 15.0


class Dashboard:
    """What every request needs: the management API, the auth rule and the CSRF secret."""

    def __init__(
        self,
        durable: Durable,
        *,
        read_only: bool | None,
        auth: Auth | None,
        secret: bytes | None,
        poll_interval: float,
    ) -> None:
        self.durable = durable
        self.read_only = durable.settings.web_read_only if read_only is None else read_only
        self.auth = auth
        configured = durable.settings.web_secret
        self.secret = secret or (configured.encode() if configured else secrets.token_bytes(32))
        self.poll_interval = poll_interval
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(pretty=_pretty, states=_STATES)
        self.templates.env.filters["when"] = _when

    # -- helpers ---------------------------------------------------------------------------

    def operator(self, request: HTTPConnection) -> Operator:
        operator: Operator = request.scope["state"]["operator"]
        return operator

    def can_act(self, request: HTTPConnection) -> bool:
        return not self.read_only and self.operator(request).can_act

    def token(self, request: HTTPConnection) -> str:
        return csrf_token(self.secret, request.scope["state"]["csrf_nonce"], self.operator(request))

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "operator": self.operator(request),
                "can_act": self.can_act(request),
                "read_only": self.read_only,
                "csrf": self.token(request),
                "csrf_field": CSRF_FIELD,
                "store": self.durable.storage.safe_url,
                "now": self.durable.now(),
                "path": lambda route, **params: url_path(request, route, **params),
                **context,
            },
            status_code=status,
        )

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- jobs ------------------------------------------------------------------------------

    async def jobs_data(self, request: Request) -> dict[str, Any]:
        query = JobQuery.parse(request.query_params)
        rows = await self.call(self.durable.jobs, **query.listing())
        counts = await self.call(self.durable.job_counts, **query.counting())
        return {**_page(query, rows), "counts": counts}

    async def jobs_page(self, request: Request) -> Response:
        return self.render(request, "jobs.html", **await self.jobs_data(request))

    async def jobs_table(self, request: Request) -> Response:
        return self.render(request, "_jobs_table.html", **await self.jobs_data(request))

    async def api_jobs(self, request: Request) -> Response:
        data = await self.jobs_data(request)
        query: JobQuery = data.pop("query")
        return _json({**data, "page": query.page, "page_size": query.page_size})

    async def job_data(self, request: Request) -> dict[str, Any]:
        job = await self.call(self.durable.get_job, request.path_params["job_id"])
        children = sorted({*job.waiting_for, *_dispatched(job)})
        return {"job": job, "children": children}

    async def job_page(self, request: Request) -> Response:
        return self.render(request, "job.html", **await self.job_data(request))

    async def job_body(self, request: Request) -> Response:
        return self.render(request, "_job_body.html", **await self.job_data(request))

    async def api_job(self, request: Request) -> Response:
        data = await self.job_data(request)
        return _json({**jsonable(data["job"]), "children": data["children"]})

    async def api_history(self, request: Request) -> Response:
        history = await self.call(self.durable.export_history, request.path_params["job_id"])
        return _json(history)

    # -- dead letters ----------------------------------------------------------------------

    async def dead_data(self, request: Request) -> dict[str, Any]:
        query = JobQuery.parse(request.query_params)
        rows = await self.call(
            self.durable.dead_letters,
            task=query.task,
            since=query.since,
            until=query.until,
            limit=query.page_size + 1,
            offset=(query.page - 1) * query.page_size,
        )
        return _page(query, rows)

    async def dead_page(self, request: Request) -> Response:
        return self.render(request, "dead.html", **await self.dead_data(request))

    async def api_dead(self, request: Request) -> Response:
        data = await self.dead_data(request)
        data.pop("query")
        return _json(data)

    # -- schedules -------------------------------------------------------------------------

    def _schedules(self) -> list[dict[str, Any]]:
        api = self.durable.schedules
        latest = api.latest_runs()
        return [{"schedule": r, "last": latest.get(r.name)} for r in api.all()]

    async def schedules_page(self, request: Request) -> Response:
        rows = await self.call(self._schedules)
        return self.render(request, "schedules.html", rows=rows)

    async def api_schedules(self, request: Request) -> Response:
        return _json(await self.call(self._schedules))

    def _schedule(self, name: str) -> dict[str, Any]:
        api = self.durable.schedules
        return {"schedule": api.get(name), "runs": api.runs(name, 100)}

    async def schedule_page(self, request: Request) -> Response:
        data = await self.call(self._schedule, request.path_params["name"])
        return self.render(request, "schedule.html", **data)

    async def schedule_body(self, request: Request) -> Response:
        data = await self.call(self._schedule, request.path_params["name"])
        return self.render(request, "_schedule_body.html", **data)

    async def api_schedule(self, request: Request) -> Response:
        return _json(await self.call(self._schedule, request.path_params["name"]))

    # -- queues, workers and throughput ----------------------------------------------------

    def _queues(self) -> dict[str, Any]:
        d = self.durable
        series = chart.minutes(d.throughput(CHART_MINUTES), d.now(), CHART_MINUTES)
        return {
            "queues": d.queues(),
            "paused": d.paused(),
            "workers": d.workers(),
            "series": series,
            "rates": chart.rates(series),
        }

    async def queues_page(self, request: Request) -> Response:
        data = await self.call(self._queues)
        return self.render(request, "queues.html", chart=chart.svg(data["series"]), **data)

    async def queues_body(self, request: Request) -> Response:
        data = await self.call(self._queues)
        return self.render(request, "_queues_body.html", chart=chart.svg(data["series"]), **data)

    async def api_queues(self, request: Request) -> Response:
        data = await self.call(self._queues)
        return _json(
            {
                **{k: data[k] for k in ("queues", "paused", "workers")},
                "throughput": {
                    "per_second": data["rates"].per_second,
                    "failure_rate": data["rates"].failure_rate,
                    "minutes": data["series"],
                },
            }
        )

    # -- events ----------------------------------------------------------------------------

    async def events_page(self, request: Request) -> Response:
        events = await self.call(self._latest_events, 100)
        return self.render(request, "events.html", events=list(reversed(events)))

    def _latest_events(self, keep: int) -> list[Event]:
        """The last ``keep`` events of the last ten minutes (read in pages: the stream
        reads oldest first)."""
        cursor: str | datetime = self.durable.now() - timedelta(minutes=10)
        latest: list[Event] = []
        for _ in range(_EVENT_PAGES):
            batch = read_events(self.durable.runtime, cursor, 500)
            latest = [*latest, *batch][-keep:]
            if len(batch) < 500:
                break
            cursor = batch[-1].cursor
        return latest

    async def api_events(self, request: Request) -> Response:
        since = request.query_params.get("since")
        events = await self.call(read_events, self.durable.runtime, since, 500)
        return _json([{**jsonable(e), "cursor": e.cursor} for e in events])

    async def live(self, request: Request) -> Response:
        """Server-sent events: ``event: job`` for the jobs asked for (``job=`` repeated),
        else ``event: event`` with each event as a table row (``format=html``) or JSON."""
        jobs = set(request.query_params.getlist("job"))
        html = request.query_params.get("format") == "html"
        # a reconnecting EventSource sends the last id it saw: resume after it
        since_text = request.headers.get("last-event-id") or request.query_params.get("since")
        since: str | datetime = since_text or self.durable.now()
        await self.call(read_events, self.durable.runtime, since, 1)  # a bad cursor: 400 now

        def frame(event: Event) -> str:
            if jobs:
                data = json.dumps({"kind": event.kind, "job_id": event.job_id})
                return _sse("job", data, event.cursor)
            if html:
                row = self.templates.get_template("_event_row.html").render(
                    event=event, path=lambda route, **p: url_path(request, route, **p)
                )
                return _sse("event", row, event.cursor)
            data = json.dumps({**jsonable(event), "cursor": event.cursor})
            return _sse("event", data, event.cursor)

        async def stream() -> AsyncIterator[str]:
            cursor, quiet = since, 0.0
            yield "retry: 2000\n\n"
            while True:
                batch = await self.call(read_events, self.durable.runtime, cursor, 500)
                for event in batch:
                    cursor = event.cursor
                    if not jobs or event.job_id in jobs:
                        yield frame(event)
                if batch:
                    quiet = 0.0
                    continue
                await anyio.sleep(self.poll_interval)
                quiet += self.poll_interval
                if quiet >= PING_EVERY:
                    quiet = 0.0
                    yield ": ping\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- actions ---------------------------------------------------------------------------

    async def csrf(self, request: Request) -> Response:
        """For scripts: the token to send back (with the cookie this response sets)."""
        return _json({"token": self.token(request), "header": "X-CSRF-Token"})

    async def act(self, request: Request, api: bool) -> Response:
        name = request.path_params["name"]
        operator = self.operator(request)
        fields = await _fields(request)
        token = request.headers.get(CSRF_HEADER) or field_text(fields, CSRF_FIELD)
        nonce = request.cookies.get(CSRF_COOKIE)
        if not same_origin(request) or not csrf_valid(self.secret, nonce, operator, token):
            audit.warning("refused %s by %s: no valid CSRF token", name, operator.name)
            return _refuse(api, 403, _NO_CSRF)
        if not self.can_act(request):
            audit.warning("refused %s by %s: read-only", name, operator.name)
            return _refuse(api, 403, "refused: the dashboard is read-only")
        action = ACTIONS.get(name)
        if action is None:
            return _refuse(api, 404, f"no action named {name!r}; actions: {', '.join(ACTIONS)}")
        try:
            outcome = await self.call(action, self.durable, fields)
        except (ActionError, FilterError, DurableError, ValueError) as exc:
            status = _status(exc)
            audit.info("%s by %s failed: %s", name, operator.name, exc)
            return _refuse(api, status, str(exc))
        audit.info(
            "%s by %s: %s; jobs=%s%s",
            name,
            operator.name,
            outcome.message,
            ",".join(outcome.ids) or "-",
            f"; skipped={','.join(outcome.skipped)}" if outcome.skipped else "",
        )
        if api:
            return _json(outcome)
        if "hx-request" not in request.headers:  # a plain form post: back to the page
            return RedirectResponse(_back(request), status_code=303)
        response = self.render(request, "_flash.html", outcome=outcome, ok=True)
        response.headers["HX-Trigger"] = "refresh"
        return response

    async def act_html(self, request: Request) -> Response:
        return await self.act(request, api=False)

    async def act_api(self, request: Request) -> Response:
        return await self.act(request, api=True)

    async def home(self, request: Request) -> Response:
        return RedirectResponse(request.url_for("jobs").path, status_code=307)


_NO_CSRF = (
    "refused: the request carries no valid CSRF token (reload the page; scripts: GET "
    "api/csrf first and send its token back as the X-CSRF-Token header)"
)
_STATES = (
    "pending",
    "running",
    "retrying",
    "suspended",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
)


def _page(query: JobQuery, rows: list[Any]) -> dict[str, Any]:
    """A page of a listing read one row past its size: is there a next page?"""
    return {
        "query": query,
        "jobs": rows[: query.page_size],
        "has_next": len(rows) > query.page_size,
    }


def _pretty(value: Any) -> str:
    """JSON for people; autoescaped where it is shown, like every other value."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _dispatched(job: Any) -> list[str]:
    return [
        str(c.result["child"])
        for c in job.calls
        if isinstance(c.result, dict) and set(c.result) == {"child"}
    ]


def _sse(event: str, data: str, cursor: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {cursor}\nevent: {event}\n{lines}\n"


def url_path(request: HTTPConnection, route: str, **params: Any) -> str:
    """The path of a route under this mount, its parameters percent-encoded (an id may
    hold ``/``, ``?`` or ``#``)."""
    quoted = {k: quote(str(v), safe="") for k, v in params.items()}
    return request.url_for(route, **quoted).path


def _back(request: Request) -> str:
    """Where a plain form post returns: the page it came from, if it is ours."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.headers.get("host") and referer.path:
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return url_path(request, "jobs")


def _json(value: Any, status: int = 200) -> Response:
    return JSONResponse(jsonable(value), status_code=status)


async def _fields(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    form = await request.form()
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key in fields:
                previous = fields[key]
                fields[key] = (
                    [*previous, value] if isinstance(previous, list) else [previous, value]
                )
            else:
                fields[key] = value
    return fields


def _status(exc: Exception) -> int:
    if isinstance(exc, ActionError):
        return exc.status
    if isinstance(exc, (JobNotFound, ScheduleNotFound)):
        return 404
    if isinstance(exc, JobStateError):
        return 409
    return 400


def _refuse(api: bool, status: int, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(f'<div class="flash bad" role="alert">{escape(message)}</div>', status)


class Guard:
    """Every request: who is asking (401 if nobody we accept), and a CSRF nonce cookie."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        settings = self.dashboard.durable.settings
        operator = await authenticate(conn, settings, self.dashboard.auth)
        if operator is None:
            await _unauthorized(conn, settings)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["operator"] = operator
        nonce = conn.cookies.get(CSRF_COOKIE)
        fresh = nonce is None
        state["csrf_nonce"] = nonce or new_nonce()
        cookie_path = scope.get("root_path") or "/"

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append(
                    "set-cookie",
                    f"{CSRF_COOKIE}={state['csrf_nonce']}; Path={cookie_path}; HttpOnly; "
                    "SameSite=Lax",
                )
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _unauthorized(conn: HTTPConnection, settings: Any) -> Response:
    headers = {}
    if settings.web_password is not None:
        headers["WWW-Authenticate"] = 'Basic realm="celery-durable"'
    elif settings.web_token is not None:
        headers["WWW-Authenticate"] = 'Bearer realm="celery-durable"'
    message = "authentication required: send the dashboard's credentials"
    if "/api/" in conn.url.path:
        return JSONResponse({"error": message}, 401, headers)
    return Response(message, 401, headers)


def _errors(dashboard: Dashboard) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    async def handle(request: Request, exc: Exception) -> Response:
        status = _status(exc)
        if "/api/" in request.url.path:
            return JSONResponse({"error": str(exc)}, status_code=status)
        return dashboard.render(request, "error.html", status=status, message=str(exc))

    return {FilterError: handle, DurableError: handle, ValueError: handle}


def create_app(
    durable: Durable,
    *,
    read_only: bool | None = None,
    auth: Auth | None = None,
    secret: bytes | None = None,
    poll_interval: float = 0.5,
) -> Starlette:
    """The dashboard as an ASGI app; mount it under any prefix.

    ``read_only``: default ``durable_web_read_only``. ``auth``: the host application's
    check, ``auth(request) -> Operator | str | None`` (None refuses); without it, the
    ``durable_web_*`` credentials, or loopback clients only. ``secret``: signs the CSRF
    tokens (give the same one to every process behind one address)."""
    d = Dashboard(
        durable, read_only=read_only, auth=auth, secret=secret, poll_interval=poll_interval
    )
    routes = [
        Route("/", d.home, name="home"),
        Route("/jobs", d.jobs_page, name="jobs"),
        Route("/jobs/table", d.jobs_table, name="jobs_table"),
        Route("/jobs/{job_id:path}/body", d.job_body, name="job_body"),
        Route("/jobs/{job_id:path}", d.job_page, name="job"),
        Route("/dead-letters", d.dead_page, name="dead"),
        Route("/schedules", d.schedules_page, name="schedules"),
        Route("/schedules/{name:path}/body", d.schedule_body, name="schedule_body"),
        Route("/schedules/{name:path}", d.schedule_page, name="schedule"),
        Route("/queues", d.queues_page, name="queues"),
        Route("/queues/body", d.queues_body, name="queues_body"),
        Route("/events", d.events_page, name="events"),
        Route("/live", d.live, name="live"),
        Route("/actions/{name}", d.act_html, methods=["POST"], name="action"),
        Route("/api/jobs", d.api_jobs, name="api_jobs"),
        Route("/api/jobs/{job_id:path}/history", d.api_history, name="api_history"),
        Route("/api/jobs/{job_id:path}", d.api_job, name="api_job"),
        Route("/api/dead-letters", d.api_dead, name="api_dead"),
        Route("/api/schedules", d.api_schedules, name="api_schedules"),
        Route("/api/schedules/{name:path}", d.api_schedule, name="api_schedule"),
        Route("/api/queues", d.api_queues, name="api_queues"),
        Route("/api/events", d.api_events, name="api_events"),
        Route("/api/csrf", d.csrf, name="api_csrf"),
        Route("/api/actions/{name}", d.act_api, methods=["POST"], name="api_action"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers=_errors(d))
    app.add_middleware(Guard, dashboard=d)
    app.state.dashboard = d
    return app
