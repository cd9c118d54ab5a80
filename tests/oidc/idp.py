"""Start and drive the real OpenID provider of ``provider.mjs`` (npm ``oidc-provider``) on loopback.

``scripts/bootstrap`` runs ``npm ci`` here when tests are bootstrapped; the tests that need the
provider are skipped with a reason when Node.js or the package is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.polling import wait_until

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "provider.mjs"
REDIRECT_URI = "http://127.0.0.1:8976/callback"


def available() -> str:
    """Why the provider cannot run here ("" when it can)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc/node_modules is missing: run `npm ci` in tests/oidc (scripts/bootstrap does)"
    return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rsa_key(kid: str | None = None) -> dict[str, Any]:
    """A fresh private RSA JWK for RS256 (the provider publishes its public half)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private, as_dict=True)
    return {**jwk, "kid": kid or f"rsa-{uuid.uuid4().hex[:8]}", "alg": "RS256", "use": "sig"}


def ec_key(kid: str | None = None) -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private, as_dict=True)
    return {**jwk, "kid": kid or f"ec-{uuid.uuid4().hex[:8]}", "alg": "ES256", "use": "sig"}


@dataclass
class Idp:
    """One provider process; ``restart`` swaps its keys (what a key rotation looks like from outside)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    issuer: str = ""
    proc: subprocess.Popen[bytes] | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)
    sign_kid: str = ""
    opaque: bool = False
    admin_redirect: str = ""  # sshcontrol's /oidc/callback/ URL: adds the admin sign-in client

    def __post_init__(self) -> None:
        self.issuer = self.issuer or f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / f"oidc-{self.port}.log"

    def start(self, keys: list[dict[str, Any]], sign_kid: str | None = None) -> None:
        self.keys = keys
        self.sign_kid = sign_kid or keys[0]["kid"]
        jwks_file = self.workdir / f"jwks-{self.port}.json"
        jwks_file.write_text(json.dumps({"keys": keys}))
        jwks_file.chmod(0o600)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OIDC_PORT": str(self.port),
            "OIDC_ISSUER": self.issuer,
            "OIDC_JWKS": str(jwks_file),
            "OIDC_SIGN_KID": self.sign_kid,
            "OIDC_OPAQUE": "1" if self.opaque else "0",
            "OIDC_ADMIN_REDIRECT": self.admin_redirect,
            "NODE_NO_WARNINGS": "1",
        }
        with self.log.open("ab") as out:  # the provider keeps its own copy of the descriptor
            proc = self.proc = subprocess.Popen(
                ["node", str(SCRIPT)],
                env=env,
                cwd=HERE,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError("oidc-provider exited")
            try:
                url = f"{self.issuer}/.well-known/openid-configuration"
                return httpx2.get(url, timeout=1).status_code == 200
            except httpx2.TransportError:
                return False

        try:
            wait_until(answering, 30, "oidc-provider did not answer")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}:\n{self.log.read_text()}") from None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, keys: list[dict[str, Any]], sign_kid: str | None = None) -> None:
        self.stop()
        self.start(keys, sign_kid)

    # -- test controls -----------------------------------------------------------------------

    def set_account(self, sub: str, email: str | None = None, groups: list[str] | None = None) -> None:
        response = httpx2.post(
            f"{self.issuer}/admin/account", json={"sub": sub, "email": email, "groups": groups or []}
        )
        assert response.status_code == 204, response.text

    def login_as(self, sub: str) -> None:
        assert httpx2.post(f"{self.issuer}/admin/login", json={"sub": sub}).status_code == 204

    # -- tokens ------------------------------------------------------------------------------

    def client_credentials(
        self, client: str = "bot", resource: str | None = None, scope: str = "mcp:tools mcp:read"
    ) -> str:
        data = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            data["resource"] = resource
        response = httpx2.post(f"{self.issuer}/token", data=data, auth=(client, f"{client}-secret"))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token
