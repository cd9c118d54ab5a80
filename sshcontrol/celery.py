"""The Celery app. Workers run ``celery -A sshcontrol worker --pool threads``.

Without ``SSHCONTROL_BROKER_URL`` the app still exists (tasks are plain functions
the embedded dispatcher calls in-process), but nothing connects to a broker.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")

app = Celery("sshcontrol")
app.conf.update(
    broker_url=os.environ.get("SSHCONTROL_BROKER_URL") or "memory://",
    result_backend=os.environ.get("SSHCONTROL_RESULT_BACKEND")
    or os.environ.get("SSHCONTROL_BROKER_URL")
    or None,
    result_expires=3600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=False,
    worker_direct=True,
)
app.autodiscover_tasks(["sshcontrol"])
