"""The collector's tuning for a serving process (the test process is restored after)."""

import gc
from collections.abc import Iterator

import pytest

from ai_gateway.collector import YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_the_start_up_heap_is_frozen_and_young_collections_are_rarer() -> None:
    built_at_start_up = [["a table of the app"]]  # a list: always tracked by the collector
    older = gc.get_threshold()[1:]
    assert any(item is built_at_start_up for item in gc.get_objects())

    tune_collector()

    assert not any(item is built_at_start_up for item in gc.get_objects())  # out of its sight
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)
    assert gc.isenabled()
