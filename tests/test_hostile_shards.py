"""Corrupted data is named: a shard that fails its CRC or does not parse gives
`error: corrupted record in <shard> (...)` in training (run.json failed, the backup kept,
the run resumes once the shard is whole again), evaluation and inspect; `inspect --verify`
names every damaged shard."""

import json
import os
import subprocess
import sys
import time

import pytest

from core import backup_state
from data_prep.prepare import prepare_dataset
from data_prep.source_spec import SourceSpec
from data_prep.verify import find_corrupted_shards
from hostile_fixtures import (REPO, assert_one_error_line, quiet_env, run_python, tiny_config,
                              tree_bytes)
from training.run_dir import RunDir
from video_fixtures import make_folders_dataset


def damage(path, where=0.5):
    """Flips a byte inside the shard's data: its record's CRC no longer matches."""
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * where)] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.fixture
def prepared(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=3, kind="npy")
    out = tmp_path / "out"
    manifest = prepare_dataset(SourceSpec("folders", str(tmp_path / "root")), str(out), 4, 16,
                               workers=1, show_progress=False, items_per_shard=2)
    return str(out), manifest


def test_find_corrupted_shards_names_exactly_the_damaged_one(prepared):
    out, manifest = prepared
    assert find_corrupted_shards(out, manifest) == []
    shards = [os.path.join(out, name) for name in manifest["splits"]["train"]["shards"]]
    assert len(shards) >= 2
    damage(shards[1])
    bad = find_corrupted_shards(out, manifest)
    assert [path for path, _ in bad] == [shards[1]]
    assert "corrupted record" in bad[0][1] or "checksum" in bad[0][1].lower(), bad


@pytest.mark.slow
@pytest.mark.parametrize("verify", [True, False], ids=["verify", "contact_sheet"])
def test_inspect_names_the_damaged_shard_in_one_line(prepared, verify):
    out, manifest = prepared
    shard = os.path.join(out, manifest["splits"]["train"]["shards"][0])
    damage(shard)
    result = run_python(["-m", "data_prep", "inspect", out, *(["--verify"] if verify else [])])
    assert_one_error_line(result, f"error: corrupted record in {shard} (")
    if verify:
        assert f"damaged: {shard}" in result.stdout


@pytest.mark.slow
def test_training_names_the_shard_keeps_the_backup_resumes_and_evaluate_names_it(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 3})
    prepared = run_python(["train.py", "--config", config, "--prepare-only"])
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    manifest = json.load(open(tmp_path / "prepared" / "manifest.json"))
    train_shards = [str(tmp_path / "prepared" / name)
                    for name in manifest["splits"]["train"]["shards"]]
    whole = {path: open(path, "rb").read() for path in train_shards}
    run_dir = RunDir(str(tmp_path / "run"))
    process = subprocess.Popen(
        [sys.executable, "train.py", "--config", config, "--run-dir", run_dir.path, "--quiet"],
        cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while backup_state.saved_epoch(run_dir.backup) < 1 and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.02)
    for path in train_shards:
        damage(path)
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = assert_one_error_line(result, "error: corrupted record in ")
    assert any(path in line for path in train_shards), line
    info = json.load(open(run_dir.run_info))
    assert info["status"] == "failed" and info["reason"].startswith("corrupted record in ")
    assert backup_state.saved_epoch(run_dir.backup) >= 1  # nothing already done is lost

    for path, data in whole.items():  # the shards rewritten whole: the run resumes
        open(path, "wb").write(data)
    resumed = run_python(["train.py", "--run-dir", run_dir.path, "--resume", "--quiet"],
                         timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dir.is_finished()

    test_shard = str(tmp_path / "prepared" / manifest["splits"]["test"]["shards"][0])
    damage(test_shard)
    evaluated = run_python(["evaluate.py", "--run-dir", run_dir.path, "--views", "1x1"],
                           timeout=600)
    assert_one_error_line(evaluated, f"error: corrupted record in {test_shard} (")


@pytest.mark.parametrize("format", ["v1", "v2"])
def test_verify_repair_rewrites_only_the_damaged_shard_byte_identical(tmp_path, format, capsys):
    from data_prep.__main__ import main

    make_folders_dataset(tmp_path / "root", per_class=3, kind="npy")
    out = str(tmp_path / "out")
    frames = 4 if format == "v1" else None
    prepare_dataset(SourceSpec("folders", str(tmp_path / "root")), out, frames, 16,
                    workers=1, show_progress=False, items_per_shard=2, format=format)
    original = tree_bytes(out)
    shard = os.path.join(out, "train", "shard-00001-of-00003.tfrecord")
    damage(shard)
    assert main(["verify", out]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"damaged: {shard} (")
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"corrupted record in {shard}" in errors[0] \
        and f"python -m data_prep verify {out} --repair" in errors[0]
    kept = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in original
            if "shard-00001" not in name and name != "manifest.json"}
    assert main(["verify", out, "--repair", "--workers", "1", "--no-progress"]) == 0
    assert f"rewrote: {shard}" in capsys.readouterr().out
    assert tree_bytes(out) == original
    # The whole shards were not written again.
    assert kept == {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in kept}
    assert main(["verify", out]) == 0


def test_verify_repair_refuses_when_the_source_changed_and_deletes_nothing(prepared, capsys):
    from data_prep.__main__ import main

    out, manifest = prepared
    shard = os.path.join(out, manifest["splits"]["train"]["shards"][0])
    damage(shard)
    os.remove(os.path.join(manifest["source"]["root"], "a", "item0.npy"))  # an item gone
    before = tree_bytes(out)
    assert main(["verify", out, "--repair", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot rebuild the preparation of {out}") \
        and err.count("\n") == 1, err
    assert tree_bytes(out) == before


def test_verify_repair_of_a_dataset_behind_a_url_rewrites_the_damaged_shard(tmp_path, capsys):
    # ram:// is TensorFlow's in-process file system: the same tf.io.gfile calls as gs://.
    from core import storage
    from data_prep.__main__ import main

    make_folders_dataset(tmp_path / "root", per_class=3, kind="npy")
    out = f"ram://repair-{os.getpid()}/out"
    prepare_dataset(SourceSpec("folders", str(tmp_path / "root")), out, None, 16,
                    workers=1, show_progress=False, items_per_shard=2)
    names = [f"{split}/{name}" for split in ("train",)
             for name in storage.listdir(f"{out}/{split}")] + ["manifest.json"]
    original = {name: storage.read_bytes(f"{out}/{name}") for name in names}
    shard = f"{out}/train/shard-00001-of-00003.tfrecord"
    data = bytearray(original["train/shard-00001-of-00003.tfrecord"])
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(shard, bytes(data))
    assert main(["verify", out]) == 2
    assert capsys.readouterr().out.startswith(f"damaged: {shard} (")
    assert main(["verify", out, "--repair", "--workers", "1", "--no-progress"]) == 0
    assert f"rewrote: {shard}" in capsys.readouterr().out
    assert {name: storage.read_bytes(f"{out}/{name}") for name in names} == original
