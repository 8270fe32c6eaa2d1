"""Independent stages of a benchmark run at once (``--jobs``), each in a spawned process on one thread.

A stage whose result is cached is read here, without a process; with one stage left to run, or ``--jobs 1``, the
stages run in this process: a spawned process spends seconds importing torch and timm before it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any


def run_each(fn: Callable[..., Any], calls: Mapping[Hashable, tuple[Any, ...]], jobs: int) -> Iterator[tuple[Any, Any]]:
    """``(key, fn(*args))`` for each of ``calls``, cached results first, then as they finish. ``fn`` takes
    ``cached_only=True`` to return its cached result, or None without doing the work."""
    import torch

    todo = {}
    for key, args in calls.items():
        hit = fn(*args, cached_only=True)
        if hit is None:
            todo[key] = args
        else:
            yield key, hit
    if jobs <= 1 or len(todo) <= 1:
        threads = torch.get_num_threads()
        try:
            for key, args in todo.items():
                yield key, fn(*args)
        finally:
            torch.set_num_threads(threads)  # fn sets its own
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn")) as ex:
        futs = {ex.submit(fn, *args): key for key, args in todo.items()}
        for f in as_completed(futs):
            yield futs[f], f.result()
