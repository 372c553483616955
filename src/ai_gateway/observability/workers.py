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
    (each worker finds it there); None with one process."""
    if workers == 1:
        yield None
        return
    previous = os.environ.get(SHARED_DIRECTORY_VARIABLE)
    directory = tempfile.mkdtemp(prefix="ai-gateway-metrics-")
    os.environ[SHARED_DIRECTORY_VARIABLE] = directory
    try:
        yield Path(directory)
    finally:
        if previous is None:
            os.environ.pop(SHARED_DIRECTORY_VARIABLE, None)
        else:
            os.environ[SHARED_DIRECTORY_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)
