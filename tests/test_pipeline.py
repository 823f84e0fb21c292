"""data_prep.pipeline: prepare on Apache Beam, locally and through Beam's portability
framework (a job service and an external worker pool as separate processes on 127.0.0.1:
what Flink, Spark and Dataflow speak), with the same bytes out."""

import filecmp
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster_fixtures import free_ports
from data_prep.__main__ import main
from data_prep.prepare import WORK_DIR, prepare_dataset
from data_prep.source_spec import SourceSpec
from video_fixtures import make_folders_dataset, write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(out):
    """Every file under `out` but the lock, relative."""
    return sorted(os.path.relpath(os.path.join(directory, name), out)
                  for directory, _, names in os.walk(out) for name in names
                  if not name.startswith(".lock"))


def assert_same_files(left, right):
    assert tree(left) == tree(right)
    for name in tree(left):
        assert filecmp.cmp(os.path.join(left, name), os.path.join(right, name),
                           shallow=False), name


def make_dataset(root, count=8):
    # Larger frames than elsewhere: each item takes tens of ms, so a kill lands mid-run.
    for index in range(count):
        write_video(root / "ab"[index % 2] / f"v{index}.avi", 24 + index, height=96, width=128)


def prepare_locally(root, out, workers=2):
    return prepare_dataset(SourceSpec("folders", str(root)), str(out), None, 16,
                           items_per_shard=3, workers=workers, show_progress=False)


def environment():
    # The pool starts its workers with the `python` on PATH: this environment's.
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


@pytest.fixture(scope="module")
def portable_services():
    """(job endpoint, worker pool endpoint) of a local job service and worker pool."""
    job_port, pool_port = free_ports(2)
    commands = [
        ["-m", "apache_beam.runners.portability.local_job_service_main", "--port",
         str(job_port)],
        ["-m", "apache_beam.runners.worker.worker_pool_main", "--service_port",
         str(pool_port)]]
    processes = [subprocess.Popen([sys.executable, *command], cwd=REPO, env=environment(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True) for command in commands]
    try:
        yield f"localhost:{job_port}", f"localhost:{pool_port}", processes[1].pid
    finally:
        for process in processes:  # and the pool's workers, in the same session
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def prepare_portable(root, out, services, **popen):
    job, pool, _ = services
    command = [sys.executable, "-m", "data_prep", "prepare", "--layout", "folders", "--root",
               str(root), "--out", str(out), "--size", "16", "--items-per-shard", "3",
               "--no-progress", "--runner=PortableRunner", f"--job_endpoint={job}",
               "--environment_type=EXTERNAL", f"--environment_config={pool}"]
    return subprocess.Popen(command, cwd=REPO, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool_writes_the_local_runs_bytes(
        tmp_path, portable_services):
    make_dataset(tmp_path / "root")
    local = prepare_locally(tmp_path / "root", tmp_path / "local")
    process = prepare_portable(tmp_path / "root", tmp_path / "portable", portable_services)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "wrote" in stdout and local["splits"]["train"]["videos"] == 8
    assert_same_files(tmp_path / "local", tmp_path / "portable")


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_in_one_line_and_the_rerun_finishes_it_the_same(
        tmp_path, portable_services):
    """Beam's local job service does not retry a lost worker's bundle (Dataflow and Flink
    do): the job fails in one line, keeps what it finished, and the rerun ends with the
    bytes of an uninterrupted run."""
    make_dataset(tmp_path / "root", count=12)
    out = tmp_path / "portable"
    process = prepare_portable(tmp_path / "root", out, portable_services)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(name.endswith(".item") for _, _, names in os.walk(out / WORK_DIR)
               for name in names):
            break
        time.sleep(0.01)
    workers = children(portable_services[2])
    assert workers, "no SDK worker process under the worker pool"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert stderr.startswith("error: The Beam job failed") and "rerun the same command" \
        in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not os.path.exists(out / "manifest.json")
    process = prepare_portable(tmp_path / "root", out, portable_services)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    prepare_locally(tmp_path / "root", tmp_path / "local", workers=1)
    assert_same_files(tmp_path / "local", out)


def test_an_unknown_option_is_one_line_exit_2(tmp_path, capsys):
    make_folders_dataset(tmp_path / "root", per_class=1, num_frames=4)
    assert main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"), "--out",
                 str(tmp_path / "out"), "--size", "8", "--runer=DirectRunner"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Expected prepare's options or Apache Beam pipeline "
                          "options") and "Received: --runer=DirectRunner" in err
    assert len(err.strip().splitlines()) == 1


def test_other_commands_refuse_beam_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path), "--runner=DirectRunner"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --runner=DirectRunner" in capsys.readouterr().err


def test_given_beam_options_run_the_pipeline_as_given(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=2, num_frames=4)
    spec = SourceSpec("folders", str(tmp_path / "root"))
    given = prepare_dataset(spec, str(tmp_path / "given"), None, 8, show_progress=False,
                            pipeline_args=["--runner=DirectRunner",
                                           "--direct_running_mode=multi_processing",
                                           "--direct_num_workers=2"])
    local = prepare_dataset(spec, str(tmp_path / "local"), None, 8, workers=1,
                            show_progress=False)
    assert given == local
    assert_same_files(tmp_path / "given", tmp_path / "local")
    assert not os.path.exists(tmp_path / "given" / WORK_DIR)


@pytest.mark.slow
def test_an_item_whose_decoder_crashes_hangs_or_runs_out_of_memory_costs_only_that_item(
        tmp_path):
    """Run the Decode step as Beam does (setup, process, teardown) over real videos named
    so that `misbehaving_prepare_item` crashes (SIGSEGV), hangs or runs out of memory."""
    from data_prep.item_results import read_item_result
    from data_prep.pipeline import DecodeItemFn, ItemWork, RunControl, item_file
    from data_prep.prepare import ItemTask
    from hostile_fixtures import misbehaving_prepare_item

    names = ["good0.avi", "crash.avi", "hang.avi", "oom.avi", "good1.avi"]
    for name in names:
        write_video(tmp_path / "root" / name, 6)
    RunControl(str(tmp_path / "work")).reset()
    step = DecodeItemFn(str(tmp_path / "work"), strict=False, decode=misbehaving_prepare_item,
                        item_timeout=5)
    step.setup()
    outputs = []
    try:
        for position, name in enumerate(names):
            task = ItemTask(str(tmp_path / "root" / name), name, None, 16, None, None, None,
                            None, None, format="v2")
            outputs.extend(step.process(ItemWork("train/shard", position, item_file(
                str(tmp_path / "items"), position), task)))
    finally:
        step.teardown()
    assert outputs == [("train/shard", (0, True)), ("train/shard", (1, False)),
                       ("train/shard", (2, False)), ("train/shard", (3, False)),
                       ("train/shard", (4, True))]
    reasons = [read_item_result(item_file(str(tmp_path / "items"), position)).get("reason")
               for position in range(5)]
    assert reasons[0] is None and reasons[4] is None
    assert reasons[1] == "the decoder crashed (its worker process died)"
    assert reasons[2].startswith("took longer than 5 s (its decoder hung")
    assert reasons[3] == "out of memory while decoding it"
    assert RunControl(str(tmp_path / "work")).done() == 5


@pytest.mark.parametrize("flag,value", [("--out", "s3://bucket/prepared"),
                                        ("--root", "nosuch://bucket/videos")])
def test_a_url_no_file_system_reads_is_one_line_exit_2_not_a_local_folder(
        tmp_path, capsys, monkeypatch, flag, value):
    monkeypatch.chdir(tmp_path)
    make_folders_dataset(tmp_path / "root", per_class=1, num_frames=4)
    arguments = {"--root": str(tmp_path / "root"), "--out": str(tmp_path / "out"), flag: value}
    assert main(["prepare", "--layout", "folders", "--size", "8", "--no-progress",
                 *[part for pair in arguments.items() for part in pair]]) == 2
    err = capsys.readouterr().err
    scheme = value.split("://")[0]
    assert err.startswith(f"error: Expected `{flag[2:]}` to be a local path or a URL")
    assert f"no file system handles {scheme}://. Received: {value}" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["root"]


def url_tree(url):
    """{relative name: bytes} of every object under `url`."""
    import tensorflow as tf

    return {os.path.relpath(os.path.join(directory, name), url): tf.io.gfile.GFile(
        os.path.join(directory, name), "rb").read()
        for directory, _, names in tf.io.gfile.walk(url) for name in names}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_url_out_holds_the_local_runs_bytes_and_trains_from_there(tmp_path, workers):
    # ram:// is TensorFlow's in-process file system: the same tf.io.gfile calls as gs://.
    import data_prep

    make_dataset(tmp_path / "root", count=5)
    local = prepare_locally(tmp_path / "root", tmp_path / "local", workers=workers)
    url = f"ram://prepared-{workers}"
    remote = prepare_locally(tmp_path / "root", url, workers=workers)
    assert remote == local
    files = url_tree(url)
    assert sorted(files) == tree(tmp_path / "local")
    for name, data in files.items():
        assert data == (tmp_path / "local" / name).read_bytes(), name
    clips = data_prep.load_split(url, "train", num_frames=4)
    assert sum(1 for _ in clips) == local["splits"]["train"]["videos"]


def test_a_rerun_into_a_url_keeps_whole_shards_and_redoes_the_rest_identically(tmp_path):
    from core import storage

    make_dataset(tmp_path / "root", count=7)
    url = "ram://prepared-rerun"
    prepare_locally(tmp_path / "root", url, workers=1)
    before = url_tree(url)
    # A finished shard is kept as it is (prepare trusts its sidecar; verify checks bytes):
    # marked here so that rewriting it would show.
    kept = "train/shard-00000-of-00003.tfrecord"
    storage.write_bytes(f"{url}/{kept}", b"kept")
    for name in ("train/shard-00001-of-00003.tfrecord", "train/shard-00001-of-00003.json",
                 "manifest.json"):
        storage.remove(f"{url}/{name}")
    # what a killed run leaves: a half-written shard and an item file of another plan
    storage.write_bytes(f"{url}/train/.tmp-shard-00001-of-00003.tfrecord", b"half")
    storage.write_bytes(f"{url}/.work/train/junk/000000.item", b"not an item")
    prepare_locally(tmp_path / "root", url, workers=1)
    assert url_tree(url) == {**before, kept: b"kept"}


