"""Recording the SSH ``exit-signal`` request, which paramiko drops.

paramiko only reports exit status -1 for a command whose shell died from a signal. We put
our own ``channel request`` handler in front of paramiko's on each transport we run
commands on, so the run loop can report ``signal="KILL"`` (or whichever) instead.

This reaches into paramiko's private ``Transport._channel_handler_table``. The patch is
per transport (a copy of the table in the instance's ``__dict__``), and a paramiko without
that table only loses the signal name: commands still run and report exit status None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

_SIGNAL_ATTR = "sshcontrol_exit_signal"
_INSTALLED_ATTR = "sshcontrol_exit_signal_handler"


def _exit_signal_aware_request_handler(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def handle(channel: paramiko.Channel, message: paramiko.Message) -> None:
        position = message.packet.tell()
        if message.get_text() == "exit-signal":
            message.get_boolean()  # want_reply: never set for exit-signal
            channel.__dict__[_SIGNAL_ATTR] = message.get_text()
            return
        message.packet.seek(position)
        original(channel, message)

    return handle


def install_exit_signal_handler(transport: paramiko.Transport) -> None:
    """Teach this transport to record ``exit-signal`` (paramiko drops it) on the channel."""
    if transport.__dict__.get(_INSTALLED_ATTR):
        return
    table = getattr(type(transport), "_channel_handler_table", None)
    if not isinstance(table, dict) or MSG_CHANNEL_REQUEST not in table:
        return  # a paramiko without this private table: we only lose the signal name
    patched = dict(table)
    patched[MSG_CHANNEL_REQUEST] = _exit_signal_aware_request_handler(table[MSG_CHANNEL_REQUEST])
    transport.__dict__["_channel_handler_table"] = patched
    transport.__dict__[_INSTALLED_ATTR] = True


def exit_signal(channel: paramiko.Channel) -> str | None:
    """The signal name the server reported for this channel's command, if any."""
    value = channel.__dict__.get(_SIGNAL_ATTR)
    return value if isinstance(value, str) else None
