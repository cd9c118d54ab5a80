"""The Celery app. Workers run ``celery -A sshcontrol worker --pool threads``.

Why the threads pool: a worker holds live paramiko connections in memory, and every call
for a session must reach that memory. Prefork children do not share memory (a session
opened in one child is invisible to the others) and paramiko transports do not survive
fork, so each worker is one process with many threads.

The app is configured from Django settings (``settings.BROKER_URL``,
``settings.RESULT_BACKEND``), which read the environment; this module reads none itself.
Without a broker URL the app is configured for ``memory://`` and never used: the embedded
dispatcher calls the task functions directly.
"""

from __future__ import annotations

import os

from celery import Celery, Task
from celery.signals import celeryd_init
from django.conf import settings

from sshcontrol.filemodes import restrict_umask
from sshcontrol.malloc_tuning import keep_freed_buffers

# `celery -A sshcontrol worker` imports this module before anything has configured Django.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")

_broker: str = settings.BROKER_URL or "memory://"


_REDIS = ("redis://", "rediss://")

# Celery's "<class>+<url>" form: Redis result stores use sshcontrol's leaner subclass, which
# the senders' shared result listener relies on (see sshcontrol/redis_results.py).
_REDIS_RESULTS = "sshcontrol.redis_results:RedisResults+"


def _result_backend() -> str | None:
    configured: str = settings.RESULT_BACKEND or ""
    if configured.startswith(_REDIS):
        return _REDIS_RESULTS + configured
    if configured:
        return configured
    if _broker.startswith(_REDIS):
        return _REDIS_RESULTS + _broker
    if _broker.startswith(("amqp://", "amqps://", "pyamqp://")):
        return "rpc://"  # results flow back over the broker to the caller that sent the task
    return None


def _broker_transport_options() -> dict[str, object]:
    options: dict[str, object] = {"socket_timeout": 5, "socket_connect_timeout": 3}
    if _broker.startswith(_REDIS):
        # Kombu emulates acknowledgements on Redis by recording every delivered message in an
        # "unacked" hash and sorted set, and removing it again on ack: two extra round trips
        # (and a fresh client object each) per task, the largest part of a worker's CPU per
        # call. sshcontrol acknowledges tasks as they start and never re-runs one (a call
        # lost with its worker is reported as interrupted, and every message carries
        # `expires`), so the restore-after-visibility-timeout it buys is never wanted.
        options["ack_emulation"] = False
    return options


class SshcontrolTask(Task):  # type: ignore[misc]
    # The worker reprs every return value for its success log line, even when INFO is off:
    # at Celery's default 1024 characters that walk of the envelope is a measurable share of a
    # worker's CPU per call, and it would copy command output (which may hold secrets) into
    # the worker's log. The log line keeps the start of the envelope.
    resultrepr_maxsize = 64


app = Celery("sshcontrol", task_cls=SshcontrolTask)
app.conf.update(
    broker_url=_broker,
    # Set, not left to the default: the worker reads it for each task with `expires`, and an
    # unset value is searched for under two names through every layer of the configuration
    # (measured ~3x slower than a set one).
    timezone="UTC",
    result_backend=_result_backend(),
    result_expires=600,  # results are fetched at once; never keep them long
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=False,
    task_acks_late=False,  # a task that dies with its worker must not run again elsewhere
    worker_direct=True,  # each worker also consumes <node>.dq2: calls for its sessions go there
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_timeout=3,
    broker_connection_retry_on_startup=True,
    broker_transport_options=_broker_transport_options(),
    result_backend_transport_options={
        "socket_timeout": 30,
        "socket_connect_timeout": 3,
        # Fail fast when the result store is down: a tool call should say so within seconds.
        "retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    },
    redis_socket_connect_timeout=3,
)


def _private_files(**kwargs: object) -> None:
    # In the worker process only (the senders import this module too): files it writes
    # (SQLite's, downloads) are owner-only, and the buffers it moves are reused.
    restrict_umask()
    keep_freed_buffers()


celeryd_init.connect(_private_files, weak=False)


# --metrics-port / --metrics-bind for workers (sshcontrol/worker_metrics.py).
from sshcontrol.worker_metrics import install as install_worker_metrics  # noqa: E402

install_worker_metrics(app)
app.autodiscover_tasks(["sshcontrol"], related_name="celery_tasks")
app.autodiscover_tasks(["sshcontrol"], related_name="worker_signals")
