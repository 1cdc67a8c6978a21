"""The cyclic garbage collector's settings for the long-running processes (serve, api, worker)."""

from __future__ import annotations

import gc

# Container allocations between two collections of the young generation (CPython: 700).
YOUNG_THRESHOLD = 10_000


def tune_for_service() -> None:
    """Called once a process has imported its modules and built its application (or its
    worker), before the first request. What is built later (the in-process worker of `tidings
    serve`, which its lifespan starts; templates compiled on first use) stays in the
    collector's sight, like everything a request allocates.

    Measured under trigger load (docs/benchmarks.md): at CPython's default threshold the young
    generation was collected every few requests, about 4 % of the process's CPU; and each full
    collection walked the ~200,000 objects of the modules and the application, which live as
    long as the process, for 130-145 ms with the event loop stopped, right in the latency
    tail. Freezing moves those objects out of the collector's sight (it never frees them,
    which they never need); the higher threshold makes young collections rarer, and each
    still finds the same cyclic garbage.
    """
    # What is garbage already is collected, not frozen.
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
