"""Argument types the inventory's commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_argument(
    expected: str, *, out_of_range: str = "", maximum: int | None = None
) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from 1 (to ``maximum``).

    ``expected`` says what was wanted ("port must be a number from 1 to 65535"); the error
    reads "<expected>, not <what was given>", or "<out_of_range>, not <n>" for a number outside.
    """

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, not {raw!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{out_of_range or expected}, not {value}")
        return value

    return parse
