"""The service processes' collector settings: startup objects frozen, young collections rarer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tidings.operations.garbage import YOUNG_THRESHOLD, tune_for_service


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_freezes_what_exists_and_raises_the_young_threshold():
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    startup_object = _Node()
    assert any(item is startup_object for item in gc.get_objects())
    tune_for_service()
    assert gc.get_freeze_count() > 0
    # Out of the collector's generations, and alive.
    assert not any(item is startup_object for item in gc.get_objects())
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored_collector")
def test_garbage_is_collected_before_the_freeze():
    cycle = _Node()
    cycle.other = cycle
    gone = weakref.ref(cycle)
    del cycle
    tune_for_service()
    # Frozen, it would still be alive.
    assert gone() is None


class _Node:
    other: _Node | None = None
