"""The metrics directory several workers share: made fresh before they start (so no earlier run's
samples count), named in the environment they inherit, removed when the server stops."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ai_gateway.observability.exposition import SHARED_DIRECTORY_VARIABLE


@contextmanager
def shared_metrics_directory(workers: int) -> Iterator[Path | None]:
    """With several workers, a new empty directory in AI_GATEWAY_METRICS_DIR for the block
    (each worker finds it there); None with one process, which then serves its own metrics
    only, whatever the variable said before."""
    previous = os.environ.pop(SHARED_DIRECTORY_VARIABLE, None)
    directory = tempfile.mkdtemp(prefix="ai-gateway-metrics-") if workers > 1 else None
    if directory is not None:
        os.environ[SHARED_DIRECTORY_VARIABLE] = directory
    try:
        yield None if directory is None else Path(directory)
    finally:
        os.environ.pop(SHARED_DIRECTORY_VARIABLE, None)
        if previous is not None:
            os.environ[SHARED_DIRECTORY_VARIABLE] = previous
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
