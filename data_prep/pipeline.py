"""`prepare`'s Apache Beam pipeline: decode items, then write shards, on any Beam runner.

    items --Decode--> one item file each (out/.work/...) --GroupByKey shard--> Write shard

Decode runs `prepare_item` for each item in a sandbox process of its own (a decoder that
crashes, runs out of memory or hangs past `ITEM_TIMEOUT_SECONDS` costs that item, not the
job) and leaves the result in an item file (`data_prep.item_results`); only the shard key,
the item's position and whether it decoded travel through the engine. Write reads a shard's
item files in position order, numbers the kept items from the kept counts of the shards
before it (a side input), writes the TFRecord and its sidecar, and deletes the item files.
So the records are the same bytes whatever the runner and worker count, and a rerun after
a killed job reuses the published shards and every finished item file.

Three small files under out/.work/ let the parent watch and steer a run on a shared file
system: `progress` (a byte per item done), `error.json` (a user's mistake found in one
item: --strict, an encoding that cannot hold the bands; later items are not decoded) and
`stop` (Ctrl-C: items not begun are left for the rerun).

`out` may be a URL (`core.storage`): item files, shards and control files are then objects,
an item behind a URL is copied to a local temporary file for its decoder, and progress is
counted in this process (an object store has no append), so the bar moves on the local
runner and the cluster's own console shows the rest.
"""

import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import posixpath
import threading
import traceback

from core import storage
from core.errors import JobFailed, UserError
from data_prep.band_statistics import combine_partials
from data_prep.dates import SIDECAR_SUFFIXES
from data_prep.item_results import ItemFileError, read_item_result, write_item_result
from data_prep.sequence_records import sequence_example
from data_prep.shards import ShardWriter, clip_example
from data_prep.workers import ITEM_TIMEOUT_SECONDS, WorkerPool, quiet_video_logs


def _quiet_beam(record):
    """Logging filter that drops what Beam logs to the root logger: on import, that
    optional Google Cloud clients are missing; in a portable job, the job service's own
    log, errors included. A failed job raises, and `run` keeps its full text."""
    return f"{os.sep}apache_beam{os.sep}" not in record.pathname


logging.getLogger().addFilter(_quiet_beam)
# Beam's own loggers: INFO per stage; errors come back as the exception `run` reports.
logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
import apache_beam as beam  # noqa: E402 (after the filter: it logs on import)

logger = logging.getLogger(__name__)

_STOP_SECONDS = 5  # after Ctrl-C, how long items in flight may take to finish
# Items done per URL work root, counted in this process (see the module docstring).
_URL_TICKS = collections.Counter()
_URL_TICKS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard to write: where, its items, and the shards before it in its split."""

    key: str  # "<split>/<shard name>"
    split: str
    tfrecord: str
    sidecar: str
    fingerprint: str
    item_dir: str  # the shard's item files: <item_dir>/<position>.item
    items: tuple  # ((item_id, label), ...) in position order
    earlier: tuple  # keys of the shards before this one in its split


@dataclasses.dataclass(frozen=True)
class ItemWork:
    """One item to decode (an element of the pipeline)."""

    shard_key: str
    position: int
    item_file: str
    task: object  # data_prep.prepare.ItemTask


class RunControl:
    """The run's control files under `work_root` (see the module docstring)."""

    def __init__(self, work_root):
        self.work_root = work_root
        self.progress_path = storage.join(work_root, "progress")
        self.error_path = storage.join(work_root, "error.json")
        self.stop_path = storage.join(work_root, "stop")
        self.reused_path = storage.join(work_root, "reused")

    def reset(self):
        storage.makedirs(self.work_root)
        for path in (self.error_path, self.stop_path):
            storage.remove(path)
        if storage.is_url(self.work_root):
            with _URL_TICKS_LOCK:
                _URL_TICKS[self.progress_path] = _URL_TICKS[self.reused_path] = 0
            return
        for path in (self.progress_path, self.reused_path):
            open(path, "wb").close()

    def stopped(self):
        return storage.exists(self.error_path) or storage.exists(self.stop_path)

    def stop(self):
        storage.write_bytes(self.stop_path, b"")

    def fail(self, message):
        storage.write_json(self.error_path, {"message": message})

    def error(self):
        """The message a worker left, or None."""
        try:
            return str(storage.read_json(self.error_path)["message"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def tick(self, reused=False):
        path = self.reused_path if reused else self.progress_path
        if storage.is_url(path):
            with _URL_TICKS_LOCK:
                _URL_TICKS[path] += 1
            return
        with open(path, "ab") as file:
            file.write(b".")

    def done(self, reused=False):
        """Items done (or, with `reused`, read back from a killed run's item files)."""
        path = self.reused_path if reused else self.progress_path
        if storage.is_url(path):
            return _URL_TICKS[path]
        try:
            return os.path.getsize(path)
        except OSError:
            return 0


class DecodeItemFn(beam.DoFn):
    """An `ItemWork` -> (shard key, (position, decoded)), its item file
    written (or reused when a killed run left it whole)."""

    def __init__(self, work_root, strict, decode, item_timeout=ITEM_TIMEOUT_SECONDS,
                 opencv_threads=1):
        super().__init__()
        self.work_root = work_root
        self.strict = strict
        self.decode = decode  # prepare_item; picklable: it runs in the sandbox
        self.item_timeout = item_timeout
        self.opencv_threads = opencv_threads
        self._sandbox = None

    def setup(self):
        self.control = RunControl(self.work_root)
        quiet_video_logs()
        # Starts now, while the parent loads TensorFlow.
        self._sandbox = WorkerPool(1, opencv_threads=self.opencv_threads)

    def process(self, work):
        decoded = self._decoded(work)
        if decoded is not None:
            yield work.shard_key, (work.position, decoded)

    def _decoded(self, work):
        """Whether the item decoded; None when stopped or on a user's mistake."""
        if self.control.stopped():
            return None
        result = None
        if storage.isfile(work.item_file):
            with contextlib.suppress(OSError, ItemFileError):
                result = read_item_result(work.item_file)
                self.control.tick(reused=True)
        if result is None:
            try:
                with _local_task(work.task) as task:
                    result = self._decode(task)
            except FileNotFoundError:  # gone since it was listed: that item is skipped
                result = {"ok": False, "reason": "the file is gone (listed, then not found)"}
            if self.control.stopped():
                return None  # Ctrl-C may have killed the sandbox: not this item's fault
            if not self._user_mistake(work, result):
                storage.makedirs(storage.dirname(work.item_file))
                write_item_result(work.item_file, result)
        if self._user_mistake(work, result):
            self.control.fail(result.get("encoding_error") or (
                f"Expected every item to decode (--strict). Received: {work.task.item_id}: "
                f"{result['reason']}"))
            return None
        self.control.tick()
        return bool(result["ok"])

    def _user_mistake(self, work, result):
        return not result["ok"] and ("encoding_error" in result or self.strict)

    def _decode(self, task):
        if self._sandbox is None:
            self._sandbox = WorkerPool(1, opencv_threads=self.opencv_threads)
        try:
            return next(self._sandbox.map_ordered(
                self.decode, [task], item_timeout=self.item_timeout,
                on_crash=lambda _, reason: {"ok": False, "reason": reason}))
        except BaseException:
            # A reply may still be on its way: the next item gets a new sandbox.
            self._sandbox.kill()
            self._sandbox = None
            raise

    def teardown(self):
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


@contextlib.contextmanager
def _local_task(task):
    """`task`, its item copied to a local temporary path if it lies behind a URL (with
    its dates sidecar, if any: `data_prep.dates.sidecar_path` looks beside the item)."""
    if not storage.is_url(task.path):
        yield task
        return
    stem = posixpath.splitext(task.path)[0]
    siblings = [base + suffix for suffix in SIDECAR_SUFFIXES for base in (task.path, stem)]
    with storage.local_copy(task.path, siblings=siblings) as local:
        yield dataclasses.replace(task, path=local)


class _Stopped(Exception):
    """Ctrl-C or another worker's error: leave this shard for the rerun."""


class WriteShardFn(beam.DoFn):
    """(shard key, [(position, decoded), ...]) -> its shard and sidecar."""

    def __init__(self, work_root, shards, finished_kept):
        super().__init__()
        self.work_root = work_root
        self.shards = shards  # key -> ShardJob
        self.finished_kept = finished_kept  # key -> items kept by shards already published

    def setup(self):
        self.control = RunControl(self.work_root)

    def process(self, element, kept):
        key, decoded = element
        if self._write(self.shards[key], decoded, kept):
            yield key

    def _write(self, shard, decoded, kept):
        if self.control.stopped() or len({position for position, _ in decoded}) != len(
                shard.items):
            return False  # stopped, or an item was left undone: the rerun finishes it
        counts = {**self.finished_kept, **kept}
        first_item_index = sum(counts.get(earlier, 0) for earlier in shard.earlier)
        try:
            write_shard(shard, first_item_index, self.control.stopped)
        except _Stopped:
            return False
        except UserError as error:
            self.control.fail(str(error))
            return False
        storage.rmtree(shard.item_dir)
        return True


def item_file(item_dir, position):
    return storage.join(item_dir, f"{position:06d}.item")


def write_shard(shard, first_item_index, stopped=lambda: False):
    """Write `shard`'s TFRecord from its item files, then its sidecar; returns the sidecar.

    Raises:
        UserError: items of different band counts or dtypes in the shard, or a record the
            encoding cannot hold.
    """
    sidecar = {"fingerprint": shard.fingerprint, "first_item_index": first_item_index,
               "videos": 0, "clips": 0, "band": None, "frames_decoded": 0, "skipped": []}
    with ShardWriter(shard.tfrecord) as writer:
        for position, (item_id, label) in enumerate(shard.items):
            if stopped():
                raise _Stopped()  # ShardWriter deletes its temporary file
            result = read_item_result(item_file(shard.item_dir, position))
            if not result["ok"]:
                sidecar["skipped"].append({"path": item_id, "reason": result["reason"],
                                           "split": shard.split})
                continue
            if sidecar["band"] is not None and result["band"] != sidecar["band"]:
                raise UserError(band_mismatch(sidecar["band"], result["band"], item_id))
            item_index = first_item_index + sidecar["videos"]
            if "frame_shape" in result:  # v2: the whole item, one SequenceExample
                if sidecar.get("dtype", result["dtype"]) != result["dtype"]:
                    raise UserError(dtype_mismatch(sidecar["dtype"], result["dtype"], item_id))
                writer.write(sequence_example(
                    result["encoded"], frame_shape=result["frame_shape"],
                    encoding=result["encoding"], label=label, item_id=item_id,
                    item_index=item_index, frame_rate=result["frame_rate"],
                    source=result["source"], dtype=result["dtype"],
                    encoded_masks=result["masks"], valid_fraction=result["valid_fraction"],
                    dates=result["dates"]))
                _add_sensor_facts(sidecar, result, item_id)
                sidecar["clips"] += 1
                sidecar["frames_stored"] = sidecar.get("frames_stored", 0) + len(
                    result["encoded"])
                sidecar["encoding"] = result["encoding"]
                sizes = {tuple(size) for size in sidecar.get("frame_sizes", [])}
                sizes.add(tuple(result["frame_shape"][:2]))
                sidecar["frame_sizes"] = sorted(list(size) for size in sizes)
            else:
                clips = result["encoded"] if "encoded" in result else result["clips"]
                for clip_index, clip in enumerate(clips):
                    writer.write(clip_example(clip, label, item_id, item_index, clip_index))
                sidecar["clips"] += len(clips)
            if sidecar["videos"] == 0:
                sidecar["first_item"] = item_id
            sidecar["videos"] += 1
            sidecar["frames_decoded"] += result["frames_available"]
            sidecar["band"] = result["band"]
    if "partials" in sidecar:  # one partial per shard: the sidecar stays small
        partials = sidecar.pop("partials")
        sidecar["statistics"] = combine_partials(partials) if partials else None
    storage.write_json(shard.sidecar, sidecar)
    return sidecar


def band_mismatch(expected, received, item_id):
    return (f"Expected every item to have {expected} band(s), as the first prepared item "
            f"has; a dataset has one band count. Received: band={received} ({item_id})")


def dtype_mismatch(expected, received, item_id):
    return (f"Expected every item to hold {expected} values, as the first prepared item "
            f"does; a dataset has one dtype (convert the items, or store 8 bits with "
            f"--to-uint8 LOW,HIGH). Received: dtype={received} ({item_id})")


def _add_sensor_facts(sidecar, result, item_id):
    """What the manifest says of the stored values, gathered per shard (v2)."""
    sidecar["dtype"] = result["dtype"]
    if result["band_names"] is not None and "band_names" not in sidecar:
        sidecar["band_names"] = result["band_names"]
    if result["nodata"] is not None:
        sidecar["nodata"] = result["nodata"]
    sidecar["mask"] = sidecar.get("mask", False) or result["masks"] is not None
    sidecar["unmasked"] = sidecar.get("unmasked", 0) + (result["masks"] is None)
    sidecar["dated"] = sidecar.get("dated", False) or result["dates"] is not None
    if result["geo"] is not None:
        sidecar.setdefault("geo", {})[item_id] = result["geo"]
    if result["statistics"] is not None:
        sidecar.setdefault("partials", []).append(result["statistics"])


def check_pipeline_arguments(pipeline_args):
    """Raise UserError for an argument no Beam pipeline option knows (a typo would
    otherwise be dropped with a warning)."""
    import argparse

    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():
        if cls.__name__ not in seen:
            seen.add(cls.__name__)
            with contextlib.suppress(argparse.ArgumentError):
                cls._add_argparse_args(parser)  # the parser Beam itself builds
    _, unknown = parser.parse_known_args(list(pipeline_args))
    if unknown:
        raise UserError(f"Expected prepare's options or Apache Beam pipeline options "
                        f"(--runner, --job_endpoint, ...). Received: {' '.join(unknown)}")


def given_runner(pipeline_args):
    """The runner named by `--runner X` or `--runner=X` in `pipeline_args`, else None (the
    local runner)."""
    arguments = list(pipeline_args or ())
    for index, argument in enumerate(arguments):
        if argument.startswith("--runner="):
            return argument.split("=", 1)[1]
        if argument == "--runner" and index + 1 < len(arguments):
            return arguments[index + 1]
    return None


def pipeline_options(pipeline_args, workers):
    """Beam options: the user's `pipeline_args`, or the local runner with `workers`
    workers (threads in this process, each decoding in its own sandbox process)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    arguments = list(pipeline_args or ())
    if given_runner(arguments) is None:
        arguments = ["--runner=DirectRunner", f"--direct_num_workers={workers}",
                     "--direct_running_mode=" + ("multi_threading" if workers > 1
                                                 else "in_memory")] + arguments
    return PipelineOptions(arguments)


def run(shards, works, finished_kept, work_root, strict, options, decode, progress,
        while_starting=None, opencv_threads=1):
    """Run the pipeline to the end, decoding each item with `decode(task)`
    (`prepare.prepare_item`); `progress(items done)` is called as it goes, and
    `while_starting()` (if given) once the pipeline has started. Each sandbox decodes
    with `opencv_threads` OpenCV threads.

    Returns:
        int, the items read back from the item files of an earlier, killed run.

    Raises:
        UserError: a user's mistake a worker found (`error.json`).
        JobFailed: the engine failed the job (a lost worker, a runner's error); its full
            text is in `<work_root>/job-error.txt`.
        KeyboardInterrupt: after asking the workers to stop and waiting for them.
    """
    control = RunControl(work_root)
    control.reset()
    outcome = {}

    def build_and_run():
        try:
            pipeline = beam.Pipeline(options=options)
            decoded = (pipeline
                       | "Items" >> beam.Create(works)
                       | "Decode" >> beam.ParDo(DecodeItemFn(work_root, strict, decode,
                                                        opencv_threads=opencv_threads)))
            kept = (decoded
                    | "Kept" >> beam.Map(lambda pair: (pair[0], int(pair[1][1])))
                    | "CountKept" >> beam.CombinePerKey(sum))
            _ = (decoded
                 | "ByShard" >> beam.GroupByKey()
                 | "Write" >> beam.ParDo(WriteShardFn(work_root, shards, finished_kept),
                                         kept=beam.pvalue.AsDict(kept)))
            outcome["result"] = pipeline.run()
            outcome["result"].wait_until_finish()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=build_and_run, name="prepare-pipeline", daemon=True)
    thread.start()
    try:
        if while_starting is not None:
            while_starting()
        while thread.is_alive():
            thread.join(0.2)
            progress(control.done())
    except KeyboardInterrupt:
        control.stop()
        with contextlib.suppress(Exception):
            if "result" in outcome:
                outcome["result"].cancel()
        thread.join(_STOP_SECONDS)
        if thread.is_alive():  # an item still decoding: its sandbox goes, the item is redone
            for process in multiprocessing.active_children():
                process.kill()
            thread.join(_STOP_SECONDS)
        raise
    progress(control.done())
    message = control.error()
    if message is not None:
        raise UserError(message)
    error = outcome.get("error")
    if isinstance(error, (UserError, KeyboardInterrupt)):
        raise error
    if error is not None:
        report = storage.join(work_root, "job-error.txt")
        try:
            storage.write_bytes(report, "".join(traceback.format_exception(error)).encode())
        except OSError:  # a full disk, say: the error itself says enough
            report = "this message"
        text = str(error).strip()
        raise JobFailed(f"The Beam job failed ({type(error).__name__}: "
                        f"{text.splitlines()[-1][:200] if text else ''}; all of it in "
                        f"{report}). Finished shards and items are kept: rerun the same "
                        f"command to resume.") from error
    return control.done(reused=True)

