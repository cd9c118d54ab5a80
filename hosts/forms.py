"""Admin forms for the inventory.

Secret fields are write-only: their widgets never render a value, not even the one
just submitted when the form comes back with an error, so a secret cannot end up in a
page, a browser cache or a screenshot.
"""

from __future__ import annotations

from typing import Any

from django import forms

from hosts.importers import MAX_SOURCE_BYTES
from hosts.keyfiles import KeyFileError, PassphraseRequired, WrongPassphrase, inspect_private_key
from hosts.models import Credential, Host


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that always renders empty (PasswordInput(render_value=False) for long text)."""

    def format_value(self, value: Any) -> str | None:
        return None


def _password_input() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class SecretFieldsForm(forms.Form):
    """The password / private key / passphrase fields, checked against the credential kind.

    Subclasses provide a ``kind`` field. A private key is loaded here, so a wrong
    passphrase or an unsupported key type is reported on the form.
    """

    password = forms.CharField(
        required=False, strip=False, widget=_password_input(), help_text="For a password credential."
    )
    private_key = forms.CharField(
        required=False,
        strip=False,
        widget=WriteOnlyTextarea(attrs={"rows": 8, "cols": 70, "autocomplete": "off", "spellcheck": "false"}),
        help_text="For a private key credential: the OpenSSH or PEM private key (ed25519, ECDSA or RSA).",
    )
    passphrase = forms.CharField(
        required=False, strip=False, widget=_password_input(), help_text="Only for an encrypted private key."
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        kind = cleaned.get("kind")
        password = cleaned.get("password") or ""
        private_key = (cleaned.get("private_key") or "").strip()
        passphrase = cleaned.get("passphrase") or ""
        if kind == Credential.Kind.PASSWORD:
            if not password:
                self.add_error("password", "Enter the password.")
            if private_key or passphrase:
                self.add_error("private_key", "A password credential takes no private key or passphrase.")
        elif kind == Credential.Kind.PRIVATE_KEY:
            if password:
                self.add_error("password", "A private key credential takes no password.")
            if not private_key:
                self.add_error("private_key", "Paste the private key.")
            else:
                try:
                    inspect_private_key(private_key, passphrase or None)
                except PassphraseRequired:
                    self.add_error("passphrase", "The key is encrypted: enter its passphrase.")
                except WrongPassphrase:
                    self.add_error("passphrase", "This passphrase does not decrypt the key.")
                except KeyFileError as exc:
                    # KeyFileError messages describe the problem, never the key text.
                    self.add_error("private_key", str(exc).capitalize() + ".")
        return cleaned

    def apply_secret(self, credential: Credential) -> None:
        """Store the validated secret on ``credential`` (encrypted; the caller saves)."""
        if self.cleaned_data["kind"] == Credential.Kind.PASSWORD:
            credential.store_password(self.cleaned_data["password"])
        else:
            credential.store_private_key(self.cleaned_data["private_key"], self.cleaned_data["passphrase"])


def _sudo_password_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        strip=False,
        widget=_password_input(),
        help_text="Optional: fed to sudo -S on stdin when a client runs a command with sudo.",
    )


class CredentialAddForm(SecretFieldsForm, forms.ModelForm[Credential]):
    """Name, kind and the secret, all at once (and a sudo password, if the account needs one)."""

    sudo_password = _sudo_password_field()

    class Meta:
        model = Credential
        fields = ("name", "kind")

    def save(self, commit: bool = True) -> Credential:
        credential: Credential = super().save(commit=False)
        self.apply_secret(credential)
        credential.set_sudo_password(self.cleaned_data.get("sudo_password") or "")
        if commit:
            credential.save()
        return credential


class CredentialChangeForm(forms.ModelForm[Credential]):
    """Only the name: the secret is replaced on its own page, the kind along with it."""

    class Meta:
        model = Credential
        fields = ("name",)


class ReplaceSecretForm(SecretFieldsForm):
    """A new secret (and possibly a new kind) for an existing credential."""

    kind = forms.ChoiceField(choices=Credential.Kind.choices)
    field_order = ("kind", "password", "private_key", "passphrase")

    def __init__(self, credential: Credential, *args: Any, **kwargs: Any) -> None:
        self.credential = credential
        kwargs.setdefault("initial", {"kind": credential.kind})
        super().__init__(*args, **kwargs)

    def save(self) -> Credential:
        self.apply_secret(self.credential)
        self.credential.save()
        return self.credential


class SudoPasswordForm(forms.Form):
    """Set, replace or clear a credential's sudo password (write-only, like the secret)."""

    sudo_password = _sudo_password_field()
    clear = forms.BooleanField(
        required=False, label="Clear it", help_text="Remove the sudo password; sudo then runs without one."
    )

    def __init__(self, credential: Credential, *args: Any, **kwargs: Any) -> None:
        self.credential = credential
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        password = cleaned.get("sudo_password") or ""
        if cleaned.get("clear") and password:
            self.add_error("clear", "Either type a new sudo password or clear it, not both.")
        elif not cleaned.get("clear") and not password:
            self.add_error("sudo_password", "Type the new sudo password, or tick “Clear it”.")
        return cleaned

    def save(self) -> Credential:
        self.credential.set_sudo_password(
            "" if self.cleaned_data["clear"] else self.cleaned_data["sudo_password"]
        )
        self.credential.save(update_fields=["sudo_password_encrypted", "updated_at"])
        return self.credential


class TagListField(forms.Field):
    """Tags typed as ``web, prod`` and stored as a JSON list."""

    widget = forms.TextInput

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value]
        text = str(value or "")
        return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


class HostForm(forms.ModelForm[Host]):
    """The host form with tags as comma-separated text instead of raw JSON."""

    tags = TagListField(required=False, help_text="Comma-separated labels, e.g. web, prod.")

    class Meta:
        model = Host
        fields = (
            "name",
            "address",
            "port",
            "username",
            "credential",
            "description",
            "tags",
            "enabled",
            "trust_on_first_use",
            "proxy_jump",
        )

    def clean_port(self) -> int:
        port: int = self.cleaned_data["port"]
        if not 1 <= port <= 65535:
            raise forms.ValidationError("A port is a number from 1 to 65535.")
        return port


class GenerateKeyForm(forms.Form):
    """The name of a credential whose ed25519 key pair is made on the server."""

    name = forms.CharField(max_length=100, help_text="The new credential's name, e.g. deploy-key.")

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if Credential.objects.filter(name=name).exists():
            raise forms.ValidationError("A credential with this name already exists.")
        return name


class ImportHostsForm(forms.Form):
    """An uploaded ssh_config or Ansible inventory and how to import it."""

    FORMATS = (
        ("ssh_config", "OpenSSH client config (ssh_config)"),
        ("ansible_ini", "Ansible inventory, INI"),
        ("ansible_yaml", "Ansible inventory, YAML"),
    )

    file = forms.FileField(help_text=f"At most {MAX_SOURCE_BYTES // (1024 * 1024)} MiB.")
    format = forms.ChoiceField(choices=FORMATS)
    dry_run = forms.BooleanField(
        required=False, initial=True, help_text="Show what would happen without writing anything."
    )
    update = forms.BooleanField(
        required=False, help_text="Update hosts that already exist (otherwise they are skipped)."
    )
    credential = forms.ModelChoiceField(
        queryset=Credential.objects.order_by("name"),
        required=False,
        help_text="Attach this credential to every imported host.",
    )
    default_user = forms.CharField(
        required=False, max_length=100, help_text="For hosts whose file names no user."
    )

    def __init__(self, *args: Any, can_update: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.can_update = can_update

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_SOURCE_BYTES:
            raise forms.ValidationError(
                f"The file is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB; "
                "import it with the import_hosts command instead."
            )
        return upload

    def clean_update(self) -> bool:
        update: bool = self.cleaned_data["update"]
        if update and not self.can_update:
            raise forms.ValidationError("You may add hosts but not change them.")
        return update
