"""Tests of training/distribution.py: Keras's fit under MultiWorkerMirroredStrategy.

Two worker processes on 127.0.0.1 fit small models with the adapted step functions; the
reference is a plain single-process fit of the same models on the same batches. Run as a
script (`python tests/test_multi_worker.py OUT_DIR` with TF_CONFIG set), this file is one
worker.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cluster_fixtures import free_ports, worker_env

# Multi-process or subprocess runs: the slow tier (`pytest -m "not slow"` skips them).
pytestmark = pytest.mark.slow

EPOCHS, GLOBAL_BATCH, ITEMS, FEATURES, CLASSES = 2, 8, 32, 6, 4
# 17 = 2 * 8 + 1: the last validation batch holds one item, so one worker's part is empty.
VALIDATION_ITEMS = 17


def make_data(items, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(items, FEATURES)).astype("float32")
    y = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, items)]
    return x, y


def make_dataset(items=ITEMS, seed=0):
    """Split between workers by element, as training/trainer.py splits validation."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices(make_data(items, seed)).batch(
        GLOBAL_BATCH).with_options(options)


def build_model(with_batch_norm):
    """Dense layers with seeded initialisers; `with_batch_norm` puts a BatchNormalization on
    the inputs, whose moving mean then depends on the data only, not on the weights."""
    import keras

    inputs = keras.Input((FEATURES,))
    x = keras.layers.BatchNormalization(momentum=0.5)(inputs) if with_batch_norm else inputs
    x = keras.layers.Dense(8, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    outputs = keras.layers.Dense(CLASSES,
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="top1")])
    return model


def fit_and_record(strategy, with_batch_norm):
    """{"weights", "batch_losses", "history", "evaluate"} of one fit (strategy None: plain)."""
    import contextlib

    import keras

    batch_losses = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_losses.append(float(logs["loss"])))
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(with_batch_norm)
    if strategy:
        from training.distribution import adapt_model_for_multi_worker

        adapt_model_for_multi_worker(model, strategy)
    validation = make_dataset(VALIDATION_ITEMS, seed=1)
    history = model.fit(make_dataset(), validation_data=validation, epochs=EPOCHS,
                        callbacks=[record], verbose=0, shuffle=False)
    evaluated = model.evaluate(validation, verbose=0, return_dict=True)
    return model, {"weights": [keras.ops.convert_to_numpy(w).tolist() for w in model.weights],
                   "batch_losses": batch_losses,
                   "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                   "evaluate": {k: float(v) for k, v in evaluated.items()}}


def worker_main(out_dir):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
    import keras

    keras.utils.set_random_seed(0)
    results = {}
    for with_batch_norm in (False, True):
        model, results[str(with_batch_norm)] = fit_and_record(strategy, with_batch_norm)
    # The adapted model saves as a plain keras.Model (instance attributes only).
    model.save(os.path.join(out_dir, "model.keras"))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Results of both workers, each a dict from with_batch_norm ("False"/"True")."""
    tmp_path = tmp_path_factory.mktemp("workers")
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    processes = []
    for index in range(2):
        out_dir = tmp_path / f"worker{index}"
        out_dir.mkdir()
        env = worker_env(addresses, index, PYTHONPATH=repo)
        processes.append((out_dir, subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(out_dir)], cwd=repo, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results = []
    try:
        for out_dir, process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-3000:]
            with open(out_dir / "results.json") as f:
                results.append(json.load(f))
    finally:
        for _, process in processes:  # a hung collective fails the test instead of blocking
            process.kill()
            process.wait()
    return tmp_path, results


def test_two_workers_fit_like_one_process_on_the_global_batch(two_workers):
    import keras

    _, results = two_workers
    keras.utils.set_random_seed(0)
    _, reference = fit_and_record(None, with_batch_norm=False)
    for worker in results:
        got = worker["False"]
        # Same weights: every step's gradient is the global batch's mean gradient (Keras's
        # 1/replicas loss scaling and the summed all-reduce, not scaled twice).
        for mine, theirs in zip(got["weights"], reference["weights"]):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
        # Per-batch logs (running means over the epoch) are the means over both halves.
        np.testing.assert_allclose(got["batch_losses"], reference["batch_losses"], rtol=1e-5)
        assert len(got["batch_losses"]) == EPOCHS * ITEMS // GLOBAL_BATCH
        assert got["history"].keys() == reference["history"].keys()
        for key, values in reference["history"].items():
            np.testing.assert_allclose(got["history"][key], values, rtol=1e-5, err_msg=key)
        for key, value in reference["evaluate"].items():
            assert got["evaluate"][key] == pytest.approx(value, rel=1e-5), key


def test_batch_norm_moving_statistics_are_the_same_on_every_worker(two_workers):
    import keras

    _, results = two_workers
    keras.utils.set_random_seed(0)
    model, reference = fit_and_record(None, with_batch_norm=True)
    names = [w.path for w in model.weights]
    first, second = (worker["True"]["weights"] for worker in results)
    for name, mine, theirs in zip(names, first, second):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7, err_msg=name)
    # On the inputs, each step's batch mean does not depend on the weights, and the mean of
    # the two workers' half-batch means is the global batch mean: the reference's value.
    index = next(i for i, name in enumerate(names) if name.endswith("moving_mean"))
    np.testing.assert_allclose(first[index], reference["weights"][index], rtol=1e-5)
    assert not np.allclose(first[index], 0.0)  # it moved (the data's mean is 2)


def test_adapted_model_saves_and_loads_as_a_plain_model(two_workers):
    import keras

    tmp_path, results = two_workers
    model = keras.saving.load_model(tmp_path / "worker0" / "model.keras")
    assert type(model) is type(build_model(with_batch_norm=True))  # keras's Functional
    assert "train_step" not in vars(model) and "_maybe_symbolic_build" not in vars(model)
    for mine, theirs in zip(model.weights, results[0]["True"]["weights"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), theirs, rtol=1e-6)


if __name__ == "__main__":
    worker_main(sys.argv[1])
