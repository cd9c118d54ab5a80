"""Readiness checks in-process: what makes ``/readyz`` answer 503, and the span's audit id."""

from __future__ import annotations

import pytest
from django.db.migrations.recorder import MigrationRecorder

from sshcontrol import health
from tests.sshd import free_port


@pytest.fixture(autouse=True)
def fresh_migration_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrated", False)


@pytest.mark.django_db
def test_it_is_ready_with_the_database_migrated_and_no_broker() -> None:
    assert health.readiness() == {
        "ready": True,
        "checks": {"database": "ok", "migrations": "ok", "broker": "not configured"},
    }


@pytest.mark.django_db
def test_it_is_not_ready_while_a_migration_is_unapplied() -> None:
    MigrationRecorder.Migration.objects.filter(app="sshcontrol").order_by("-id")[:1].get().delete()
    report = health.readiness()
    assert not report["ready"]
    assert report["checks"]["migrations"] == "1 unapplied (run sshcontrol migrate)"


@pytest.mark.django_db
def test_it_is_not_ready_when_the_broker_is_unreachable(settings) -> None:
    settings.BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    report = health.readiness()
    assert (report["ready"], report["checks"]["broker"]) == (False, "unreachable")
    assert settings.BROKER_URL not in str(report)
