"""The metrics directory several workers share: made fresh before they start (so no earlier run's
samples count), named in the environment they inherit, removed when the server stops."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ai_gateway.observability.exposition import MULTIPROC_VARIABLE


@contextmanager
def shared_metrics_directory(workers: int) -> Iterator[Path | None]:
    """With several workers, a new empty directory in PROMETHEUS_MULTIPROC_DIR for the block
    (prometheus-client reads the variable when a worker imports it); None with one process."""
    if workers == 1:
        yield None
        return
    previous = os.environ.get(MULTIPROC_VARIABLE)
    directory = tempfile.mkdtemp(prefix="ai-gateway-metrics-")
    os.environ[MULTIPROC_VARIABLE] = directory
    try:
        yield Path(directory)
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)
