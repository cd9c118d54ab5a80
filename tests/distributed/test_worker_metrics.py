"""``celery -A sshcontrol worker --metrics-port``: a real worker serves its own /metrics."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from celery import Celery
from celery.utils.nodenames import worker_direct

from tests.celery_worker import worker_command
from tests.distributed.conftest import BROKERS, REPO, reachable, service_env
from tests.polling import wait_until
from tests.sshd import free_port

TOKEN = "scrape-" + secrets.token_urlsafe(12)


@pytest.fixture
def metered_worker(transactional_db: None, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """One worker with --metrics-port on the Redis broker: (node name, metrics URL, broker URL)."""
    url = BROKERS["redis"]
    if not reachable(url):
        if os.environ.get("CI"):
            pytest.fail(f"redis is not running at {url}; .ci/run must start it")
        pytest.skip(f"redis is not running at {url}")
    name = f"sshcmetrics{secrets.token_hex(3)}@{socket.gethostname()}"
    port = free_port()
    with (tmp_path / "worker.log").open("ab") as log:  # the worker keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*worker_command(name, 2), "--metrics-port", str(port)],
            env=service_env(url, SSHCONTROL_METRICS_TOKEN=TOKEN),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            try:
                httpx2.get(metrics_url, timeout=1)
            except httpx2.TransportError:
                return False
            return True

        wait_until(answers, 60, "the worker's metrics endpoint did not answer")
        yield name, metrics_url, url
    finally:
        proc.terminate()
        proc.wait(30)


def scrape(url: str, **headers: str) -> httpx2.Response:
    return httpx2.get(url, headers=headers, timeout=10)


def test_it_serves_the_workers_task_counts_behind_the_token(metered_worker: tuple[str, str, str]) -> None:
    name, metrics_url, broker_url = metered_worker
    assert scrape(metrics_url).status_code == 401
    assert scrape(metrics_url, authorization=f"Bearer {TOKEN}", host="evil.example").status_code == 421

    sender = Celery("test-sender", broker=broker_url)
    sender.send_task("sshcontrol.probe", kwargs={"session_ids": []}, queue=worker_direct(name), expires=30)
    wanted = 'sshcontrol_worker_tasks_total{outcome="ok",task="probe"} 1.0'

    def counted() -> str:
        page = scrape(metrics_url, authorization=f"Bearer {TOKEN}").text
        return page if wanted in page else ""

    text = wait_until(counted, 30, f"the worker never counted the probe task ({wanted})")
    assert "sshcontrol_sessions_held 0.0" in text and "process_cpu_seconds_total" in text
