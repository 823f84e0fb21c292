"""Decoding processes: prepare's per-worker sandbox, evaluate's and predict's pool.

`data_prep.pipeline` runs each item's decoding in a `WorkerPool(1)` of its Beam worker (the
engine is the parallelism; the sandbox keeps a crashing or hanging decoder from taking the
worker down); evaluation and prediction decode in a pool of several.

Each worker is a "spawn" process with its own pipe and one task at a time. The parent never
shares a lock with them, so stopping (Ctrl-C, an error) is just killing the processes:
`multiprocessing.Pool.terminate` can deadlock on its queue locks when interrupted. A worker
that dies in the middle of a task (a decoder crash), runs out of memory on it, or takes
longer than the per-item timeout (a hung decoder: the worker is killed) costs that one
task, reported through `on_crash` with the reason, and is replaced.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import traceback
import time
import types
from multiprocessing.connection import wait

from core.tensorflow_env import tensorflow_noise_filtered

_JOIN_SECONDS = 5
# A worker still decoding one item after this long is hung (a broken file can loop FFmpeg):
# prepare and evaluate kill it and skip the item with that reason.
ITEM_TIMEOUT_SECONDS = 600
_SKIP = "skip"  # a worker's reply status: this item failed on its own (out of memory)


def quiet_video_logs():
    """Skipped items are reported once, by prepare: silence OpenCV's and FFmpeg's warnings."""
    # Read when OpenCV first logs / opens a video; worker processes inherit them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def available_cores():
    """Cores this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def first_line(error):
    """The first line of an exception's text, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _worker_main(connection, opencv_threads=1):
    import cv2

    # The workers are the parallelism: one OpenCV thread each. Ctrl-C is the parent's job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(opencv_threads)
    quiet_video_logs()
    first = True
    while True:
        try:
            if first:
                # Unpickling the first task imports its function's module, which may load
                # TensorFlow (evaluation's decoding does): without its start-up noise.
                first = False
                with tensorflow_noise_filtered():
                    message = connection.recv()
            else:
                message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, argument, skip_errors = message
        try:
            reply = (True, function(argument))
        except MemoryError:  # this item's size, not a bug: it is skipped, the pool goes on
            reply = (_SKIP, "out of memory while decoding it")
        except skip_errors as error:  # a broken item the caller expects: skipped, not a bug
            reply = (_SKIP, first_line(error))
        except Exception:  # a bug, not a broken item: the parent raises it
            reply = (False, traceback.format_exc())
        try:
            connection.send(reply)
        except MemoryError:
            connection.send((_SKIP, "out of memory while sending its result"))


class WorkerPool:
    """`workers` spawned processes that run `function(argument)` calls in order.

    Spawned processes re-import the parent's `__main__` script: for `python train.py` that
    would load TensorFlow in every worker. They need only what the function needs, so the
    parent's main module is hidden while they start (`python -m ...` mains are never
    re-imported anyway).
    """

    def __init__(self, workers, opencv_threads=1):
        self._context = multiprocessing.get_context("spawn")
        # Several workers are the parallelism: one OpenCV thread each by default.
        self._opencv_threads = opencv_threads
        self._workers = {}  # connection -> process
        for _ in range(workers):
            self._start_worker()

    def _start_worker(self):
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child_end, self._opencv_threads),
                                            daemon=True)
        main_module = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            sys.modules["__main__"] = main_module
        child_end.close()
        self._workers[parent_end] = process
        return parent_end

    def map_ordered(self, function, arguments, on_crash, item_timeout=None, skip_errors=()):
        """Yield `function(argument)` for each argument, in order.

        Args:
            function: picklable callable, run in a worker.
            arguments: iterable of picklable arguments (consumed lazily).
            on_crash: callable(argument, reason) -> the result to yield when the worker
                running that argument dies, runs out of memory, or takes longer than
                `item_timeout`; `reason` says which, in a few words.
            item_timeout: seconds one call may take before its worker is killed (a hung
                decoder), or None.
            skip_errors: exception classes (picklable) that mean "this item is broken":
                raised in a worker, they go to `on_crash` with their first line as the
                reason. Any other exception is a bug: `map_ordered` raises RuntimeError.
        """
        arguments = iter(arguments)
        busy = {}  # connection -> (index, argument)
        started = {}  # connection -> time.monotonic() its current call was sent
        finished = {}
        next_to_submit = next_to_yield = 0
        exhausted = False
        while True:
            # Keep every idle worker busy, but hold at most a few results out of order.
            for connection in list(self._workers):
                if exhausted or connection in busy or len(finished) > 2 * len(self._workers):
                    continue
                argument = next(arguments, _END)
                if argument is _END:
                    exhausted = True
                    continue
                connection.send((function, argument, tuple(skip_errors)))
                busy[connection] = (next_to_submit, argument)
                started[connection] = time.monotonic()
                next_to_submit += 1
            while next_to_yield in finished:
                yield finished.pop(next_to_yield)
                next_to_yield += 1
            if not busy:
                if exhausted:
                    return
                continue  # idle because too many results waited for one: submit again
            timeout = None
            if item_timeout is not None:
                timeout = max(0.0, min(started[c] for c in busy) + item_timeout
                              - time.monotonic())
            ready = wait(list(busy), timeout)
            if not ready:  # the oldest call is past its time: a hung decoder
                connection = min(busy, key=started.get)
                index, argument = busy.pop(connection)
                finished[index] = on_crash(argument, f"took longer than {item_timeout:g} s "
                                                     "(its decoder hung; worker killed)")
                self._workers[connection].kill()
                self._replace(connection)
                continue
            for connection in ready:
                index, argument = busy.pop(connection)
                try:
                    ok, result = connection.recv()
                except (EOFError, OSError):
                    finished[index] = on_crash(argument, "the decoder crashed (its worker "
                                                         "process died)")
                    self._replace(connection)
                    continue
                if ok == _SKIP:  # unpickled: an equal string, not the same object
                    finished[index] = on_crash(argument, result)
                    continue
                if not ok:
                    raise RuntimeError(f"A worker failed on {argument!r}:\n{result}")
                finished[index] = result

    def _replace(self, connection):
        process = self._workers.pop(connection)
        connection.close()
        process.join(_JOIN_SECONDS)
        self._start_worker()

    def close(self):
        """Ask idle workers to stop, then kill whatever is left."""
        for connection in self._workers:
            with contextlib.suppress(OSError):
                connection.send(None)
        for process in self._workers.values():
            process.join(_JOIN_SECONDS)
        self.kill()

    def kill(self):
        for connection, process in self._workers.items():
            if process.is_alive():
                process.kill()
            process.join()
            connection.close()
        self._workers = {}


_END = object()


@contextlib.contextmanager
def worker_pool(workers):
    """A `WorkerPool`; closed on normal exit, killed on errors and Ctrl-C."""
    quiet_video_logs()
    pool = WorkerPool(workers)
    try:
        yield pool
    except BaseException:
        pool.kill()
        raise
    else:
        pool.close()
