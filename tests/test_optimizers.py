"""Per-variable learning-rate multipliers: the first step of a variable with multiplier m
moves exactly m times what it moves with 1, for SGD (with and without momentum and
Nesterov), Adam and AdamW; the optimizers serialise with their multipliers."""

import keras
import numpy as np
import pytest

from training.optimizers import OPTIMIZERS, MultiplierAdam, MultiplierSGD

OPTIONS = {
    "sgd": {"momentum": 0.0},
    "sgd_momentum": {"momentum": 0.9},
    "sgd_nesterov": {"momentum": 0.9, "nesterov": True},
    "adam": {},
    "adamw": {"weight_decay": 0.0},
}


def _two_twins(kind, multiplier, gradient_scale=1.0):
    """Two identical variables a (multiplier 1) and b (`multiplier`), one step from the same
    gradient (b's gradient times `gradient_scale`); returns their moves."""
    cls = OPTIMIZERS[kind.split("_")[0]]
    start = np.zeros(3, "float32")  # at 0 the move is the new value, without round-off
    gradient = np.array([0.3, -0.01, 2.0], "float32")
    a = keras.Variable(start, name="a")
    b = keras.Variable(start, name="b")
    optimizer = cls(0.05, lr_multipliers={b.path: multiplier}, **OPTIONS[kind])
    optimizer.apply_gradients([(gradient, a), (gradient * gradient_scale, b)])
    return np.asarray(a) - start, np.asarray(b) - start


@pytest.mark.parametrize("kind", list(OPTIONS))
@pytest.mark.parametrize("multiplier", [0.1, 0.0, 2.5])
def test_first_step_moves_multiplier_times_as_far(kind, multiplier):
    move_a, move_b = _two_twins(kind, multiplier)
    assert np.all(move_a != 0)
    np.testing.assert_allclose(move_b, multiplier * move_a, rtol=1e-5, atol=1e-9)


def test_adam_ignores_a_gradient_scale_so_the_test_above_tells_the_two_apart():
    # Scaling Adam's gradient by 0.1 leaves its first step (about lr * sign(g)) unchanged:
    # gradient scaling is no learning-rate multiplier.
    move_a, move_b = _two_twins("adam", 1.0, gradient_scale=0.1)
    np.testing.assert_allclose(move_b, move_a, rtol=1e-2)  # equal up to Adam's epsilon


def test_variables_not_listed_keep_the_optimizer_rate():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    optimizer = MultiplierSGD(0.5, lr_multipliers={"elsewhere/kernel": 0.1}, momentum=0.0)
    optimizer.apply_gradients([(np.ones(2, "float32"), a)])
    np.testing.assert_allclose(np.asarray(a), [0.5, 0.5])


@pytest.mark.parametrize("value", [-0.1, "0.1", True])
def test_bad_multipliers_are_refused(value):
    with pytest.raises(ValueError, match="`lr_multipliers` must map variable paths to numbers >= 0"):
        MultiplierAdam(0.1, lr_multipliers={"fc/kernel": value})


def test_model_keras_round_trips_the_optimizer_and_its_multipliers(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(keras.layers.Dense(4, name="body")(inputs)))
    model.compile(MultiplierAdam(1e-3, lr_multipliers={"body/kernel": 0.1}), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, MultiplierAdam)
    assert loaded.optimizer.lr_multipliers == {"body/kernel": 0.1}
    loaded.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
