"""Collector: the garbage collector tuned for a serving process.

A request allocates thousands of short-lived containers, so CPython's default first-generation
threshold (700) runs a collection several times per request, each one walking every young
object, including those of the other requests in flight; objects that happen to be alive at
that moment are promoted, and the older generations' collections then walk the whole heap:
the modules, the app and its tables, hundreds of thousands of objects that never become
garbage. Measured under load (docs/benchmarks.md), the collector took about a tenth of the
gateway's CPU time.

Once the app is built, `tune_collector` moves everything allocated so far into the
collector's permanent generation (`gc.freeze`: never walked again, never freed) and raises the
first-generation threshold, so a collection runs every YOUNG_THRESHOLD allocations. Reference
counting still frees almost everything at once; only garbage held in reference cycles waits
longer, at most YOUNG_THRESHOLD young objects (a few MiB). Only a server process does this:
the tests and the command-line tools keep the defaults.
"""

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 10_000
"""Net allocations of container objects between two first-generation collections."""
OLDER_THRESHOLDS: Final = (20, 20)
"""First-generation collections per second-generation one, and second per full (the full
one also waits, as always, until a quarter of the old objects are new)."""


def tune_collector() -> None:
    """Freeze the heap built at start-up and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
