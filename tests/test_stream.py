"""Tests for training/stream.py and `predict.py --stream`: a video file, a FIFO that ffmpeg
writes, an HTTP URL served on 127.0.0.1, standard input and a clean Ctrl-C; each prediction is the run's
clip window, preprocessed as the run's data was; a MoViNet stream variant steps frame by frame
with its states, each prediction the causal model's on the frames so far."""

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

import predict
from models import build_model
from training import stream, timeline
from training.run_dir import open_trained_run
from training.scoring import clip_probabilities_function, load_run_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def write_moving_bar(path, frames=30, fps=25):
    """An MJPG video (24x32) of a bright bar sweeping right, then standing still."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
    assert writer.isOpened()
    background = np.random.default_rng(0).integers(0, 60, (24, 32, 3)).astype(np.uint8)
    for t in range(frames):
        frame = background.copy()
        left = (4 + 3 * t) % 28 if t < frames // 2 else 12
        frame[:, left:left + 4] = (250, 230, 210)
        writer.write(frame)
    writer.release()
    return str(path)


def stream_lines(capsys, run_path, source, *extra):
    assert predict.main(["--run-dir", run_path, "--stream", source, "--json", *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_clip_window_samples_the_timeline_window():
    sampling = {"frames": 3, "frame_stride": 2, "method": "stride"}
    window = stream.ClipWindow(sampling, 5)
    for t in range(7):
        window.push(np.full((2, 2, 1), t, np.uint8))
    assert window.full and len(window.frames) == 5  # bounded: the oldest frames are gone
    _, indices = timeline.window_indices(7, sampling, 5, 2)
    np.testing.assert_array_equal(window.clip()[0, :, 0, 0, 0], indices[-1])  # frames 2..6


def test_file_stream_scores_each_window_as_the_timeline_does(run_path, tmp_path, capsys):
    video = write_moving_bar(tmp_path / "bar.avi")
    lines = stream_lines(capsys, run_path, video, "--every", "3", "--top-k", "2")
    run = open_trained_run(run_path)
    window = timeline.clip_span(run.manifest["sampling"])  # 4 frames
    assert [line["frame"] for line in lines] == list(range(window, 31, 3))
    probabilities_of = clip_probabilities_function(load_run_model(run))
    batches = timeline.video_windows(video, run.manifest["sampling"], run.manifest["resize"],
                                     window, 3, run.input_shape[1])
    clips = np.concatenate([clips for _, clips, _ in batches])[:len(lines)]
    expected = np.asarray(probabilities_of(clips))
    for line, row in zip(lines, expected):
        assert len(line["top_k"]) == 2 and line["latency_ms"] > 0
        assert line["frames_per_second"] > 0
        top = line["top_k"][0]
        assert top["class"] == run.class_names[int(row.argmax())]
        assert abs(top["probability"] - float(row.max())) < 1e-5
    # time_s is the stream's own clock for a file: frame n of 25 frames/s
    assert abs(lines[0]["time_s"] - (window - 1) / 25) < 0.05


@pytest.fixture(scope="module")
def stream_run_path(run_path, tmp_path_factory):
    """The tiny run's directory with a fresh movinet_a0_stream of 4x32x32 clips (frames resized
    to 32x32, no crop) in place of its small3d; its rezero scales are set, so every block
    (and its causal temporal convolution) counts, and its classifier scaled up, so the
    probabilities move with the frames (a fresh head's stay near 1/2)."""
    run = tmp_path_factory.mktemp("stream_run")
    for name in ("run.json", "data_manifest.json", "classes.txt"):
        shutil.copy(os.path.join(run_path, name), run / name)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "input_shape": [4, 32, 32, 3]}))
    manifest = json.loads((run / "data_manifest.json").read_text())
    manifest["resize"] = {**manifest["resize"], "size": 32, "resize_short": None}
    (run / "data_manifest.json").write_text(json.dumps(manifest))
    model = build_model("movinet_a0_stream", 2, (4, 32, 32, 3))
    for layer in model.layers:
        if layer.name.endswith(".rezero"):
            layer.set_weights([np.full_like(w, 0.5) for w in layer.get_weights()])
    classifier = model.get_layer("classifier")
    classifier.set_weights([w * 30.0 for w in classifier.get_weights()])
    model.save(run / "model.keras")
    return str(run)


def test_stream_model_steps_frame_by_frame_as_the_causal_model(stream_run_path, tmp_path,
                                                               capsys):
    video = str(tmp_path / "fade.avi")  # brightening texture: the frames so far weigh
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    texture = np.random.default_rng(1).integers(0, 40, (24, 32, 3))
    for t in range(12):
        writer.write((texture + 18 * t).astype(np.uint8))
    writer.release()
    lines = stream_lines(capsys, stream_run_path, video, "--every", "6")
    assert [line["frame"] for line in lines] == [6, 12]  # every 6 frames, from frame 6
    capture = cv2.VideoCapture(video)
    frames = np.stack(list(timeline.read_frames(capture, 32, None, 32)))[None]
    capture.release()
    saved = load_run_model(open_trained_run(stream_run_path))
    seen = []
    for line in lines:
        # The causal clip model on the frames so far (a model of that many frames).
        causal = build_model("movinet_a0_stream", 2, (line["frame"], 32, 32, 3))
        causal.set_weights(saved.get_weights())
        expected = np.asarray(clip_probabilities_function(causal)(frames[:, :line["frame"]]))[0]
        got = {top["class"]: top["probability"] for top in line["top_k"]}
        assert sorted(got) == ["moving", "still"]
        for index, name in enumerate(["moving", "still"]):
            assert abs(got[name] - float(expected[index])) < 1e-4
        assert line["latency_ms"] > 0 and line["frames_per_second"] > 0
        seen.append(got["moving"])
    assert max(seen) - min(seen) > 0.02  # the states carry: the frames so far change the output


def test_max_frames_stops_the_stream(run_path, tmp_path, capsys):
    video = write_moving_bar(tmp_path / "bar.avi")
    lines = stream_lines(capsys, run_path, video, "--every", "1", "--max-frames", "6")
    assert [line["frame"] for line in lines] == [4, 5, 6]


def _ffmpeg_to(target, video, *options):
    return subprocess.Popen(["ffmpeg", "-v", "error", "-y", *options, "-i", video, "-c:v",
                             "mpeg2video", "-q:v", "2", "-f", "mpegts", target],
                            stdin=subprocess.DEVNULL)


@needs_ffmpeg
def test_fifo_fed_by_ffmpeg(run_path, tmp_path, capsys):
    video = write_moving_bar(tmp_path / "bar.avi")
    fifo = str(tmp_path / "live.ts")
    os.mkfifo(fifo)
    writer = _ffmpeg_to(fifo, video)
    try:
        lines = stream_lines(capsys, run_path, fifo, "--every", "2")
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert len(lines) >= 10 and all(len(line["top_k"]) == 2 for line in lines)


@needs_ffmpeg
def test_http_url_on_loopback(run_path, tmp_path, capsys):
    video = write_moving_bar(tmp_path / "bar.avi")
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-i", video, "-c:v", "mpeg2video", "-q:v", "2",
                    "-f", "mpegts", str(served / "live.ts")], check=True, timeout=60)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
        lines = stream_lines(capsys, run_path, url, "--every", "2")
    finally:
        server.shutdown()
        server.server_close()
    assert len(lines) >= 10


@pytest.mark.slow
@needs_ffmpeg
def test_ctrl_c_stops_a_live_stream_cleanly(run_path, tmp_path):
    video = write_moving_bar(tmp_path / "bar.avi", frames=250)
    fifo = str(tmp_path / "live.ts")
    os.mkfifo(fifo)
    writer = _ffmpeg_to(fifo, video, "-re")  # real time: 10 s of frames
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    reader = subprocess.Popen([sys.executable, os.path.join(ROOT, "predict.py"), "--run-dir",
                               run_path, "--stream", fifo, "--every", "5"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = reader.stdout.readline()  # the first prediction: the stream is live
        assert "frame" in first and "frames/s" in first
        reader.send_signal(signal.SIGINT)
        _, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
        writer.kill()
        writer.wait()
    assert reader.returncode == 0
    assert "stopped after" in err and "Traceback" not in err


@pytest.mark.slow
@needs_ffmpeg
def test_standard_input(run_path, tmp_path):
    video = write_moving_bar(tmp_path / "bar.avi")
    stream_file = tmp_path / "bar.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", video, "-c:v", "mpeg2video", "-q:v", "2",
                    "-f", "mpegts", str(stream_file)], check=True, timeout=60)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(stream_file, "rb") as stdin:
        completed = subprocess.run(
            [sys.executable, os.path.join(ROOT, "predict.py"), "--run-dir", run_path, "--stream",
             "-", "--every", "2", "--json"], stdin=stdin, env=env, capture_output=True,
            text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    assert len(lines) >= 10 and lines[0]["frame"] == 4


@pytest.mark.parametrize("arguments, message", [
    (["--stream", "/no/such/video.mp4"], "no such file"),
    (["--stream", "x.mp4", "item.mp4"], "no items"),
    (["--every", "3", "item.mp4"], "Expected --stream with --every"),
    ([], "Expected video files or directories"),
])
def test_stream_mistakes_are_one_line_exit_2(run_path, capsys, arguments, message):
    assert predict.main(["--run-dir", run_path, *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
