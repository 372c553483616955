"""A script run in a fresh interpreter of this checkout: what a new process imports and loads,
out of reach of the test process's own modules."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_line(script: str, directory: Path) -> str:
    """The last line the script prints, run in `directory` with this checkout on the path and
    logging at `error` (a failing script fails the test with its stderr)."""
    result = subprocess.run(  # noqa: S603  # our own interpreter
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=directory,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LOG_LEVEL": "error"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
