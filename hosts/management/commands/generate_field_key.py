"""Print a new field encryption key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from hosts import crypto


class Command(BaseCommand):
    help = (
        "Print a new Fernet key for SSHCONTROL_FIELD_KEYS. To rotate, put it first in the list, "
        "keep the old key after it, run rotate_field_keys, then drop the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # Printed only: the key is a secret and where it is kept is the operator's decision.
        self.stdout.write(crypto.generate_key())
