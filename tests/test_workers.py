"""Tests for data_prep.workers: ordered results, a crashing worker, stopping on errors."""

import time

import pytest

from data_prep.workers import worker_pool

# Multi-process or subprocess runs: the slow tier (`pytest -m "not slow"` skips them).
pytestmark = pytest.mark.slow

CRASH = "__import__('os')._exit(3)"


def test_results_come_back_in_order():
    expressions = [f"__import__('time').sleep({0.05 * (i % 3)}) or {i} * {i}" for i in range(9)]
    with worker_pool(2) as pool:
        assert list(pool.map_ordered(eval, expressions, on_crash=None)) == \
            [i * i for i in range(9)]


def test_one_slow_task_ahead_of_many_fast_ones_neither_blocks_nor_reorders():
    # The fast worker runs ahead until too many results wait for the slow one, idles, and
    # must start again once the slow result arrives.
    expressions = ["__import__('time').sleep(1.0) or 0"] + [str(i) for i in range(1, 30)]
    with worker_pool(2) as pool:
        assert list(pool.map_ordered(eval, expressions, on_crash=None)) == list(range(30))


def test_a_crashing_task_yields_on_crash_and_the_pool_goes_on():
    with worker_pool(2) as pool:
        results = list(pool.map_ordered(eval, ["1", CRASH, "3", CRASH, "5"],
                                        on_crash=lambda argument, reason: "crashed"))
        assert results == [1, "crashed", 3, "crashed", 5]
        assert len(pool._workers) == 2 and all(p.is_alive() for p in pool._workers.values())


def test_an_error_in_the_parent_kills_busy_workers_at_once():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        with worker_pool(2) as pool:
            processes = list(pool._workers.values())
            results = pool.map_ordered(eval, ["1", "__import__('time').sleep(60)"],
                                       on_crash=None)
            assert next(results) == 1  # the other worker is now busy for a minute
            raise RuntimeError("stop")
    assert not any(process.is_alive() for process in processes)
    assert time.monotonic() - start < 30


def test_an_exception_in_a_task_is_raised_in_the_parent_with_its_traceback():
    with worker_pool(1) as pool:
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            list(pool.map_ordered(eval, ["1", "1 / 0"], on_crash=None))


def test_expected_errors_and_out_of_memory_skip_their_item_through_on_crash():
    """`skip_errors` (a broken item) and MemoryError reach `on_crash` with their reason;
    any other exception is still a bug. (A skip once came back as the result itself.)"""
    tasks = ["1", "int('x')", "bytearray(1 << 62)", "4", "1 / 0"]
    with worker_pool(1) as pool:
        results = pool.map_ordered(eval, tasks, skip_errors=(ValueError,),
                                   on_crash=lambda argument, reason: ("skipped", reason))
        assert [next(results) for _ in range(4)] == [
            1, ("skipped", "invalid literal for int() with base 10: 'x'"),
            ("skipped", "out of memory while decoding it"), 4]
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            next(results)
