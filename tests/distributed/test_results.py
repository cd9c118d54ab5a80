"""The shared result listener (sshcontrol/redis_results.py) against a real Redis.

Results are written exactly as a worker writes them (the same backend class), and read by a
listener of its own Celery app, so these tests need no worker.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import wait

import pytest
import redis
from celery import Celery

from sshcontrol.redis_results import RECONNECT_SECONDS, ResultListener, ResultsUnreachable
from tests.distributed.conftest import BROKERS, reachable
from tests.sshd import free_port

REDIS = BROKERS["redis"]


def make_app(url: str, client_name: str = "") -> Celery:
    app = Celery(f"results-test-{secrets.token_hex(3)}")
    app.conf.update(
        result_backend=f"sshcontrol.redis_results:RedisResults+{url}",
        result_serializer="json",
        accept_content=["json"],
        redis_socket_connect_timeout=1,
        result_backend_transport_options={"retry_policy": {"max_retries": 1, "interval_start": 0.1}},
        **({"redis_client_name": client_name} if client_name else {}),
    )
    return app


@pytest.fixture
def redis_url() -> str:
    if not reachable(REDIS):
        if os.environ.get("CI"):
            pytest.fail(f"redis is not running at {REDIS}")
        pytest.skip(f"redis is not running at {REDIS}")
    return REDIS


@pytest.fixture
def listener(redis_url: str) -> Iterator[ResultListener]:
    made = ResultListener(make_app(redis_url, client_name=f"sshc-test-{secrets.token_hex(4)}"))
    yield made
    made.stop()


def test_it_resolves_results_and_relays_progress_in_order(listener: ResultListener) -> None:
    assert listener.ready(5)
    backend = listener.app.backend
    seen: list[int] = []
    waiting = [listener.expect(lambda meta: seen.append(meta["n"])) for _ in range(20)]
    for i, pending in enumerate(waiting):
        backend.store_result(pending.task_id, {"n": i}, "PROGRESS")
        backend.store_result(pending.task_id, {"ok": True, "n": i}, "SUCCESS")
    done, _ = wait([p.future for p in waiting], timeout=10)
    assert len(done) == 20
    assert [p.future.result()["result"]["n"] for p in waiting] == list(range(20))
    assert seen == list(range(20)), "each call's progress arrives before its result"
    # Progress is published only; the final result is stored too (for the catch-up read).
    client = redis.Redis.from_url(REDIS)
    assert client.exists(backend.get_key_for_task(waiting[0].task_id))
    client.delete(*(backend.get_key_for_task(p.task_id) for p in waiting))


def test_it_ignores_results_of_tasks_nobody_waits_for(listener: ResultListener) -> None:
    assert listener.ready(5)
    backend = listener.app.backend
    gone = listener.expect()
    listener.discard(gone)
    backend.store_result(gone.task_id, {"ok": True}, "SUCCESS")
    other = listener.expect()
    backend.store_result(other.task_id, {"ok": True}, "SUCCESS")
    assert other.future.result(timeout=5)["status"] == "SUCCESS"
    assert not gone.future.done()


def test_it_reads_results_stored_before_it_subscribed(listener: ResultListener) -> None:
    backend = listener.app.backend
    early = listener.expect()  # registered, but the listener is not subscribed yet
    backend.store_result(early.task_id, {"ok": True, "early": True}, "SUCCESS")
    assert listener.ready(5)
    assert early.future.result(timeout=5)["result"] == {"ok": True, "early": True}


def test_it_comes_back_after_losing_its_connection(listener: ResultListener) -> None:
    assert listener.ready(5)
    admin = redis.Redis.from_url(REDIS)
    name = listener.app.conf.redis_client_name
    ids = [c["id"] for c in admin.client_list(_type="pubsub") if c.get("name") == name]
    assert ids, "the listener's subscription is visible to Redis"
    pending = listener.expect()
    for client_id in ids:
        admin.execute_command("CLIENT KILL ID", client_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(c.get("name") == name for c in admin.client_list(_type="pubsub")) and listener.ready(0.1):
            break
        time.sleep(0.05)
    listener.app.backend.store_result(pending.task_id, {"ok": True}, "SUCCESS")
    assert pending.future.result(timeout=5)["status"] == "SUCCESS"


def test_calls_waiting_on_a_store_that_went_away_fail_within_seconds() -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listener = ResultListener(make_app(f"redis://127.0.0.1:{port}/0"))
    try:
        deadline = time.monotonic() + 10
        while not reachable(f"redis://127.0.0.1:{port}/0") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.ready(5)
        pending = listener.expect()
        proc.terminate()
        proc.wait(10)
        started = time.monotonic()
        with pytest.raises(ResultsUnreachable):
            pending.future.result(timeout=RECONNECT_SECONDS + 10)
        assert time.monotonic() - started < RECONNECT_SECONDS + 5
        assert not listener.ready(0.5), "new calls are told at once that the store is down"
    finally:
        listener.stop()
        if proc.poll() is None:
            proc.kill()
