"""The collector's tuning for a serving process (the test process is restored after)."""

import gc
from collections.abc import Iterator

import pytest

from ai_gateway.collector import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_the_start_up_heap_is_frozen_and_young_collections_are_rarer() -> None:
    built_at_start_up = [{"table": index} for index in range(1000)]

    tune_collector()

    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert gc.isenabled()
