"""Per-item failures stay per item: an item that runs out of memory, crashes or hangs its
decoder is skipped with its reason and the others are prepared; a large .npy item is read
through its memory map, only the frames its clips need, within a per-item budget."""

import functools
import json
import os
import time

import numpy as np
import pytest

from data_prep import prepare as prepare_module
from data_prep.decode import DecodeError, decode_array
from data_prep.workers import worker_pool
from hostile_fixtures import PEAK_MB, REPO, misbehaving_decoder, run_code, run_python
from video_fixtures import make_folders_dataset


def sparse_npy(path, shape, dtype="float32"):
    """A .npy declaring `shape` whose data is a hole in the file system (no disk used)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0,), dtype))
    header["shape"] = tuple(shape)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return str(path)


@pytest.mark.slow
def test_out_of_memory_and_hung_items_are_skipped_with_their_reason_and_the_pool_goes_on():
    tasks = ["1", "bytearray(1 << 62)", "3", "__import__('time').sleep(120)", "5"]
    with worker_pool(2) as pool:
        results = list(pool.map_ordered(eval, tasks, on_crash=lambda task, reason: reason,
                                        item_timeout=5))
        assert len(pool._workers) == 2 and all(p.is_alive() for p in pool._workers.values())
    assert results[0::2] == [1, 3, 5]
    assert results[1] == "out of memory while decoding it"
    assert results[3].startswith("took longer than 5 s (its decoder hung")


def test_a_memory_error_while_decoding_skips_the_item_in_process(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(prepare_module, "load_clips", out_of_memory)
    task = prepare_module.ItemTask(str(tmp_path / "x.npy"), "x.npy", 4, 16, None, "uniform",
                                   1, 1, "raw", None)
    assert prepare_module.prepare_item(task) == {"ok": False,
                                                 "reason": "out of memory while decoding it"}


def test_npy_frames_past_the_per_item_budget_are_a_decode_error(tmp_path):
    path = sparse_npy(tmp_path / "big.npy", (8, 64, 64, 3))
    with pytest.raises(DecodeError, match=r"4 needed frames .* take 0 MB|more than the 0 MB"):
        decode_array(path, indices=[0, 1, 2, 3], budget_bytes=1000)


def test_npy_scaling_is_over_the_whole_item_whichever_frames_are_read(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(12, 6, 5, 2)).astype(np.float32) * 40
    array[3, 1, 1, 0] = np.nan
    path = str(tmp_path / "a.npy")
    np.save(path, array)
    every = decode_array(path)
    some = decode_array(path, indices=[2, 3, 9])
    np.testing.assert_array_equal(some, every[[2, 3, 9]])
    # The reference: the whole item scaled at once (the rule in data_prep.decode's doc).
    low = np.nanmin(array, axis=(0, 1, 2))
    high = np.nanmax(array, axis=(0, 1, 2))
    expected = np.clip(np.rint(np.nan_to_num((array.astype(np.float64) - low) / (high - low)
                                             * 255.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(every, expected)


@pytest.mark.slow
def test_a_100_mb_float_npy_decodes_its_needed_frames_under_a_500_mb_limit(tmp_path):
    """Reading it whole (as float64, 9.5 x its size) would need about 1 GB."""
    path = tmp_path / "long.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(32, 512, 512, 3))
    array[:] = 0.25
    array[5] = 2.0
    array.flush()
    del array
    result = run_code(f"""
        import resource, sys
        sys.path.insert(0, {REPO!r})
        from data_prep.decode import decode_array
        frames = decode_array({str(path)!r}, size=16, indices=[0, 5, 31])
        print("values", sorted(set(frames.ravel().tolist())), frames.shape)
        print("peak_mb", {PEAK_MB})
    """, memory_mb=500, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    # Scaled over the whole item (min 0.25, max 2.0), not over the three frames read.
    assert "values [0, 255] (3, 16, 16, 3)" in result.stdout, result.stdout
    assert int(result.stdout.split("peak_mb")[1].split()[0]) < 500


@pytest.mark.slow
def test_prepare_skips_an_oversized_npy_with_its_reason_and_prepares_the_rest(tmp_path):
    """The issue's case: one huge .npy stopped prepare with no manifest. 13 GB declared
    (a sparse file): its clips alone need more than the per-item budget."""
    make_folders_dataset(tmp_path / "root", per_class=2, kind="npy")
    sparse_npy(tmp_path / "root" / "b" / "huge.npy", (64, 4096, 4096, 3))
    out = tmp_path / "out"
    result = run_python(["-m", "data_prep", "prepare", "--layout", "folders", "--root",
                         str(tmp_path / "root"), "--out", str(out), "--frames", "4",
                         "--size", "16", "--workers", "2", "--no-progress"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    manifest = json.load(open(out / "manifest.json"))
    skipped = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert list(skipped) == ["b/huge.npy"], skipped
    assert "allowed per item" in skipped["b/huge.npy"]
    assert sum(split["videos"] for split in manifest["splits"].values()) == 4


def misbehaving_items(directory, names):
    paths = []
    for index, name in enumerate(names):
        paths.append(str(directory / f"{name}.npy"))
        np.save(paths[-1], np.random.default_rng(index).integers(0, 256, (8, 24, 32, 3),
                                                                 np.uint8))
    return paths


def test_predict_json_keeps_every_good_result_when_an_item_crashes_hangs_or_runs_out_of_memory(
        run_path, tmp_path, capsys, monkeypatch):
    """The issue's case: one bad item cost every good result. Here the decoder (in predict's
    worker process) segfaults on one item, hangs on one, runs out of memory on one."""
    import predict

    paths = misbehaving_items(tmp_path, ["good0", "crash", "good1", "hang", "oom", "good2"])
    real = predict.run_decoder
    monkeypatch.setattr(predict, "run_decoder", lambda *args: functools.partial(
        misbehaving_decoder, decode=real(*args)))
    started = time.perf_counter()
    assert predict.main(["--run-dir", run_path, "--json", "--item-timeout", "3", *paths]) == 1
    assert time.perf_counter() - started < 60
    captured = capsys.readouterr()
    output = json.loads(captured.out)
    assert [r["path"] for r in output["results"]] == [paths[0], paths[2], paths[5]]
    assert all(r["predictions"] for r in output["results"])
    assert output["errors"] == [
        {"path": paths[1], "error": "the decoder crashed (its worker process died)"},
        {"path": paths[3], "error": "took longer than 3 s (its decoder hung; worker killed)"},
        {"path": paths[4], "error": "out of memory while decoding it"}]
    assert captured.err.count("error: ") == 3 and "Traceback" not in captured.err
    # The good results are those of a run without the bad items.
    assert predict.main(["--run-dir", run_path, "--json", paths[0], paths[2], paths[5]]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == output["results"]


def test_predict_plot_into_a_place_that_cannot_be_written_is_one_line(run_path, tmp_path,
                                                                       capsys):
    import predict

    (tmp_path / "a_file").write_text("not a directory")
    item = str(tmp_path / "item.npy")
    np.save(item, np.zeros((8, 24, 32, 3), np.uint8))
    plots = str(tmp_path / "a_file" / "plots")
    assert predict.main(["--run-dir", run_path, "--timeline", "--plot", plots, item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Expected --plot to be a directory that can be created and "
                          "written: Not a directory") and err.count("\n") == 1, err


def test_evaluate_decoding_again_skips_an_item_that_crashes_hangs_or_runs_out_of_memory():
    """evaluate's decode-again path, one worker: a bad item costs that item only."""
    from training.evaluation import _decoded_views

    tasks = ["/items/good0", "/items/crash", "/items/hang", "/items/oom", "/items/good1"]
    decode = functools.partial(misbehaving_decoder, decode=os.path.basename)
    assert list(_decoded_views(tasks, 1, item_timeout=3, decode=decode)) == [
        "good0", ("skipped", "the decoder crashed (its worker process died)"),
        ("skipped", "took longer than 3 s (its decoder hung; worker killed)"),
        ("skipped", "out of memory while decoding it"), "good1"]
