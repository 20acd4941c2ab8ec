"""One `celery worker` per queue, each with its own concurrency, kept running.

The original design's ``Queue("critical", Concurrency(20)), Queue("emails",
Concurrency(10))`` becomes ``celery -A proj durable worker --queue critical:20 --queue
emails:10``: a small supervisor that starts ``celery -A proj worker -Q critical -c 20
-n critical@%h`` and one for emails, restarts a worker that exits on its own (with a
growing pause), and forwards SIGTERM / SIGINT / SIGQUIT to every worker, so Celery's
warm and cold shutdown (and ``durable_shutdown_grace``) work exactly as for one worker.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigurationError

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    concurrency: int

    @classmethod
    def parse(cls, text: str) -> QueueSpec:
        name, sep, number = text.rpartition(":")
        if not sep:
            name, number = text, ""
        if not name or not number.isdigit() or int(number) < 1:
            raise ConfigurationError(
                f"--queue takes NAME:CONCURRENCY with a concurrency of at least 1, "
                f"e.g. critical:20; got {text!r}"
            )
        return cls(name, int(number))


def parse_queues(texts: Sequence[str]) -> list[QueueSpec]:
    specs = [QueueSpec.parse(t) for t in texts]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"queue given more than once: {', '.join(duplicates)}")
    return specs


def worker_command(celery_args: Sequence[str], spec: QueueSpec, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        *celery_args,
        "worker",
        "-Q",
        spec.name,
        "-c",
        str(spec.concurrency),
        "-n",
        f"{spec.name}@%h",
        *extra,
    ]


@dataclass
class Supervisor:
    commands: dict[str, list[str]]
    say: Callable[[str], None] = print
    max_pause: float = 30.0
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _pauses: dict[str, float] = field(default_factory=dict)
    _stopping: bool = False

    def run(self) -> int:
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        for name in self.commands:
            self._start(name)
        codes: dict[str, int] = {}
        while self._children:
            time.sleep(0.2)
            for name, child in list(self._children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self._children[name]
                if self._stopping:
                    codes[name] = code
                    self.say(f"worker {name} exited ({code})")
                else:
                    self._restart(name, code)
        return max(codes.values(), default=0)

    def _start(self, name: str) -> None:
        child = subprocess.Popen(self.commands[name])
        self._children[name] = child
        self.say(f"started worker {name} (pid {child.pid}): {' '.join(self.commands[name])}")

    def _restart(self, name: str, code: int) -> None:
        pause = min(self.max_pause, self._pauses.get(name, 0.5) * 2)
        self._pauses[name] = pause
        self.say(f"worker {name} exited on its own ({code}); restarting in {pause:g}s")
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.1)
        if not self._stopping:
            self._start(name)

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping = True
        self.say(f"forwarding {signal.Signals(signum).name} to {len(self._children)} worker(s)")
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signum)
