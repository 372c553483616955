"""Collector: the garbage collector tuned for a serving process.

A request allocates thousands of short-lived containers, so CPython's default first-generation
threshold (700) runs a collection several times per request, each one walking every young
object, including those of the other requests in flight; objects that happen to be alive at
that moment are promoted, and the older generations' collections then walk the whole heap:
the modules, the app and its tables, hundreds of thousands of objects that never become
garbage. Measured under load (docs/architecture.md), the collector took about a tenth of the
bare gateway's CPU time.

Once the app is built, `tune_collector` moves everything allocated so far into the
collector's permanent generation (`gc.freeze`: reference counting still frees those objects,
but a reference cycle among them is never collected) and raises the first-generation
threshold, so a young collection runs every YOUNG_THRESHOLD allocations. The older
generations keep the interpreter's thresholds, which count young collections (the middle one
is collected every 10 of them, the whole heap every 10 of those once it has also grown by a
quarter): a reference cycle that outlives a young collection (an exception's traceback, a
cancelled task) is freed after up to about a million allocations instead of 70,000, a few
hundred requests' worth. Only a server process and its helper processes (the ledger writer, the
span exporter) do this: the tests and the command-line tools keep the defaults.
"""

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 10_000
"""Net allocations of container objects between two first-generation collections."""


def tune_collector() -> None:
    """Freeze the heap built at start-up and collect the young generation less often (the
    older generations' thresholds are left as the interpreter has them)."""
    gc.collect()
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *older)
