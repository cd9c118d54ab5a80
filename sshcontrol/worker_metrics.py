"""``celery -A sshcontrol worker --metrics-port N [--metrics-bind ADDRESS]``: /metrics for a worker.

The worker's own numbers: tasks run by task and outcome, sessions held, calls running, and
the process collectors. A bootstep starts the endpoint (``sshcontrol.metrics``, protected
like the HTTP server's) when the worker starts and stops it with the worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps
from celery.signals import task_postrun
from click import Option

from sshcontrol import metrics

DEFAULT_BIND = "127.0.0.1"


class MetricsEndpoint(bootsteps.StartStopStep):  # type: ignore[misc]
    def __init__(
        self, worker: Any, metrics_port: int | None = None, metrics_bind: str | None = None, **options: Any
    ) -> None:
        super().__init__(worker, **options)
        self.port = metrics_port
        self.bind = metrics_bind or DEFAULT_BIND
        self.server: Any = None

    def start(self, worker: Any) -> None:
        if self.port is not None:
            self.server = metrics.serve_in_thread(self.bind, self.port)

    def stop(self, worker: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _count_task(sender: Any = None, retval: Any = None, state: str | None = None, **kwargs: Any) -> None:
    name = str(getattr(sender, "name", "?")).removeprefix("sshcontrol.")
    if isinstance(retval, dict) and "ok" in retval:
        outcome = "ok" if retval["ok"] else str(retval.get("kind", "error"))
    else:
        outcome = (state or "unknown").lower()
    metrics.WORKER_TASKS.labels(name, outcome).inc()


def install(app: Celery) -> None:
    app.user_options["worker"].add(
        Option(("--metrics-port",), type=int, default=None, help="Serve Prometheus metrics on this port.")
    )
    app.user_options["worker"].add(
        Option(("--metrics-bind",), default=None, help=f"Address for --metrics-port ({DEFAULT_BIND})."),
    )
    app.steps["worker"].add(MetricsEndpoint)
    task_postrun.connect(_count_task, weak=False)
