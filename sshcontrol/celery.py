"""The Celery app. Workers run ``celery -A sshcontrol worker --pool threads``.

Why the threads pool: a worker holds live paramiko connections in memory, and every call
for a session must reach that memory. Prefork children do not share memory (a session
opened in one child is invisible to the others) and paramiko transports do not survive
fork, so each worker is one process with many threads.

Without ``SSHCONTROL_BROKER_URL`` the app is configured for ``memory://`` and never used:
the embedded dispatcher calls the task functions directly.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")

_broker = os.environ.get("SSHCONTROL_BROKER_URL") or "memory://"


def _result_backend() -> str | None:
    configured = os.environ.get("SSHCONTROL_RESULT_BACKEND")
    if configured:
        return configured
    if _broker.startswith(("redis://", "rediss://")):
        return _broker
    if _broker.startswith(("amqp://", "amqps://", "pyamqp://")):
        return "rpc://"  # results flow back over the broker to the caller that sent the task
    return None


app = Celery("sshcontrol")
app.conf.update(
    broker_url=_broker,
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
    broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 3},
    result_backend_transport_options={
        "socket_timeout": 30,
        "socket_connect_timeout": 3,
        # Fail fast when the result store is down: a tool call should say so within seconds.
        "retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    },
    redis_socket_connect_timeout=3,
)
app.autodiscover_tasks(["sshcontrol"], related_name="tasks")
app.autodiscover_tasks(["sshcontrol"], related_name="worker")
