"""Helper processes: the children a gateway process starts for work kept off its event loop
(the ledger writer, usage/writer.py; the span exporter, observability/span_export.py).

Each is `python -m <its module>` in a session of its own, told what it needs in a first JSON
line on its standard input (so a database URL is never on a command line), logging to the
gateway's standard error, and ending at the end of its input: when the gateway closes it, or
dies. It ignores SIGINT and SIGTERM: a Ctrl-C in a terminal, or a service manager signalling the
whole process group, is the gateway's to handle, and the gateway's shutdown still goes through
its helpers. It first closes every descriptor it inherited past its standard three: the event
loop's process spawning (uvloop's) leaves some of the gateway's open in the child, the listening
socket among them, which would keep the gateway's port held by a helper.
"""

import contextlib
import os
import signal
import sys
from typing import Any

import orjson

from ai_gateway.logs import configure_logging


def command(module: str) -> list[str]:
    """The helper's command line: this interpreter running `module`."""
    return [sys.executable, "-m", module]


def hello(*, log_level: str, log_format: str, **needs: str | None) -> bytes:
    """The first line a helper is sent: what it needs, and how to log."""
    return orjson.dumps({**needs, "log_level": log_level, "log_format": log_format}) + b"\n"


def close_inherited() -> None:
    """Close every descriptor past the standard three: those /proc lists (closing up to the
    descriptor limit, where a container allows a billion, could take minutes one by one)."""
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every number up to the limit
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        return
    for descriptor in descriptors:
        if descriptor > 2:
            with contextlib.suppress(OSError):  # (the listing's own, already closed)
                os.close(descriptor)


def greeted(module: str, *, needs: str) -> dict[str, Any]:
    """In the helper, first: the gateway's signals ignored, its first line read (which must hold
    `needs`), logging set up as the gateway's."""
    close_inherited()
    for ending in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ending, signal.SIG_IGN)
    first: dict[str, Any] = orjson.loads(sys.stdin.buffer.readline() or b"{}")
    if needs not in first:
        raise SystemExit(f"{module} is started by the gateway, not by hand")
    configure_logging(first["log_level"], first["log_format"])
    return first
