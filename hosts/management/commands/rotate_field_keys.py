"""Re-encrypt every stored credential secret under the newest field key."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hosts import crypto
from hosts.models import Credential

ENCRYPTED_FIELDS = ("secret_encrypted", "passphrase_encrypted")


class Command(BaseCommand):
    help = (
        "Re-encrypt every credential secret and passphrase under the newest field key. "
        "Procedure: (1) generate a key with generate_field_key; (2) put it FIRST in "
        "SSHCONTROL_FIELD_KEYS (or the SSHCONTROL_FIELD_KEYS_FILE file), keeping the old key after it, "
        "e.g. SSHCONTROL_FIELD_KEYS=NEW,OLD, and restart the services; (3) run this command; "
        "(4) remove the old key from the setting and restart again. The rotation runs in one "
        "transaction: if any value cannot be decrypted with the configured keys nothing is changed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # The keys may have been edited since this process first read them.
        crypto.reset_keys()
        try:
            key_count = len(crypto.configured_keys())
            rotated, credentials = self._rotate_all()
        except crypto.DecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        self.stdout.write(
            f"Rotated {rotated} encrypted value{'s' if rotated != 1 else ''} "
            f"in {credentials} credential{'s' if credentials != 1 else ''} under the newest field key."
        )
        if key_count > 1:
            self.stdout.write("You can now remove the older keys from SSHCONTROL_FIELD_KEYS.")
        else:
            self.stdout.write(
                "Only one field key is configured, so the values were re-encrypted under the same key."
            )

    def _rotate_all(self) -> tuple[int, int]:
        rotated = 0
        credentials = 0
        with transaction.atomic():
            # Locked so that an admin replacing a secret meanwhile cannot be overwritten
            # with the value read here.
            for credential in Credential.objects.select_for_update().order_by("pk"):
                changes: dict[str, str] = {}
                for field in ENCRYPTED_FIELDS:
                    value: str = getattr(credential, field)
                    if not value:
                        continue
                    changes[field] = self._rotate_value(credential, field, value)
                if changes:
                    # update() rather than save(): rotation is not an edit, so updated_at stays.
                    Credential.objects.filter(pk=credential.pk).update(**changes)
                    rotated += len(changes)
                    credentials += 1
        return rotated, credentials

    @staticmethod
    def _rotate_value(credential: Credential, field: str, value: str) -> str:
        label = "secret" if field == "secret_encrypted" else "passphrase"
        if not crypto.is_encrypted(value):
            raise crypto.DecryptionError(
                f"the {label} of credential '{credential.name}' is not encrypted (no {crypto.PREFIX} prefix)"
            )
        try:
            return crypto.rotate(value)
        except InvalidToken:
            raise crypto.DecryptionError(
                f"the {label} of credential '{credential.name}' cannot be decrypted "
                "with any configured field key"
            ) from None
