"""Is a secret recoverable from some bytes? Plain, base64, hex, or any of them reversed.

A test that asserts a secret did not leak is only as good as its search: this one decodes
every base64 and hex run (also with blanks and colons removed, as ``base64`` wraps lines and
``od``/``xxd`` space bytes) at every alignment, and looks for the secret forwards and backwards.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re

_B64_RUN = re.compile(rb"[A-Za-z0-9+/=_-]{8,}")
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{12,}")


def _decodings(data: bytes) -> list[bytes]:
    """``data`` and whatever its base64 and hex runs decode to (each also reversed).

    Runs are also looked for with blanks and colons taken out: ``base64`` wraps its lines,
    ``od`` and ``xxd`` space and wrap their bytes.
    """
    found = [data]
    squeezed = re.sub(rb"[\s:]", b"", data)
    for run in _B64_RUN.findall(data) + _B64_RUN.findall(squeezed):
        for candidate in (run, run.replace(b"-", b"+").replace(b"_", b"/")):
            for trim in range(4):
                piece = candidate[trim:]
                piece = piece[: len(piece) - len(piece) % 4]
                with contextlib.suppress(binascii.Error, ValueError):
                    found.append(base64.b64decode(piece, validate=False))
    for run in _HEX_RUN.findall(squeezed):
        for trim in (0, 1):
            piece = run[trim:]
            piece = piece[: len(piece) - len(piece) % 2]
            with contextlib.suppress(binascii.Error, ValueError):
                found.append(binascii.unhexlify(piece))
    return found + [d[::-1] for d in found]


def recoverable(secret: str, data: bytes) -> bool:
    needle = secret.encode()
    return any(needle in d for d in _decodings(data))
