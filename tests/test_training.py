"""The training recipe: budget-driven schedules, weight decay, label smoothing, seeds."""

import time

import keras
import keras_tuner as kt
import numpy as np
import pytest

from pipeline.training import (
    SCHEDULES,
    BudgetSchedule,
    SmoothedSparseCrossentropy,
    compile_model,
    make_optimizer,
    schedule_factor,
    trial_seed,
    weights_digest,
)

CFG = {"optimizer": "nesterov", "learning_rate": 0.1, "momentum": 0.9, "schedule": "one_cycle",
       "warmup_fraction": 0.2, "batch_size": 16, "weight_decay": 0.0, "label_smoothing": 0.0}


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))


class LearningRates(keras.callbacks.Callback):
    """The learning rate each batch actually trained with."""

    def __init__(self, delay_s=0.0, budget=None):
        super().__init__()
        self.rates, self.delay_s, self.budget, self.progress = [], delay_s, budget, []

    def on_train_batch_begin(self, batch, logs=None):
        if self.budget is not None:  # what the budget's schedule read when it set this rate
            self.progress.append(self.budget.progress)

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        time.sleep(self.delay_s)


def data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, size=n)


def test_schedule_shapes():
    assert schedule_factor("one_cycle", 0.0) == 0.0
    assert schedule_factor("one_cycle", 0.2) == pytest.approx(1.0)
    assert schedule_factor("one_cycle", 0.6) == pytest.approx(0.5)
    assert schedule_factor("linear", 0.25) == pytest.approx(0.75)
    assert schedule_factor("warmup_cosine", 0.1) == pytest.approx(0.5)
    assert schedule_factor("warmup_cosine", 0.6) == pytest.approx(0.5)
    assert schedule_factor("step", 0.6) == pytest.approx(0.1)
    assert schedule_factor("exponential", 1.0) == pytest.approx(0.01)
    for name in SCHEDULES:  # every schedule peaks at the rate itself and ends no higher
        before_end = [schedule_factor(name, p / 10) for p in range(10)]
        assert max(before_end) == pytest.approx(1.0), name
        assert schedule_factor(name, 1.0) <= max(before_end)
    for name in ("linear", "cosine", "warmup_cosine", "one_cycle"):
        assert schedule_factor(name, 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="unknown schedule 'wavy'"):
        schedule_factor("wavy", 0.5)


@pytest.mark.parametrize("schedule", ["one_cycle", "linear", "cosine", "step"])
def test_a_step_budget_runs_the_whole_schedule_over_the_epochs_trained(schedule):
    x, y = data(64)  # 4 batches of 16: 3 epochs are 12 steps
    model = compile_model(tiny_model(), {**CFG, "schedule": schedule})
    budget = BudgetSchedule(schedule, 0.1, 0.2, steps=12, tolerance=0.0)
    rates = LearningRates()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[budget, rates])
    expected = [0.1 * schedule_factor(schedule, step / 12) for step in range(12)]
    np.testing.assert_allclose(rates.rates, expected, atol=1e-6)
    assert budget.progress == 1.0 and budget.steps == 12 and budget.ended_by == "steps"


def test_a_time_budget_stops_training_and_its_schedule_ends_there():
    x, y = data(1024)  # 64 batches an epoch
    model = compile_model(tiny_model(), CFG)
    budget = BudgetSchedule("one_cycle", 0.1, 0.2, steps=64 * 50, seconds=3.0, tolerance=0.0)
    rates = LearningRates(delay_s=0.01, budget=budget)
    history = model.fit(x, y, batch_size=16, epochs=50, verbose=0, callbacks=[budget, rates],
                        validation_data=(x[:64], y[:64]))
    assert budget.ended_by == "time" and budget.progress == 1.0
    assert len(history.history["loss"]) < 50 and len(rates.rates) > 80
    # stopped at the first batch past the budget (a loaded machine may stretch one batch)
    assert 3.0 <= budget.trained_seconds < 9.0 and budget.steps == len(rates.rates)
    # every batch trained at the schedule's rate for the share of the seconds spent when it
    # started (a step-counted schedule would be at 1/3,200 of its way per step)
    expected = [0.1 * schedule_factor("one_cycle", p) for p in rates.progress]
    np.testing.assert_allclose(rates.rates, expected, atol=1e-6)
    peak_at = int(np.argmax(rates.rates))
    # warm-up for 20% of the clock, however unevenly a loaded machine spaces the batches in it
    assert 0.15 <= rates.progress[peak_at] <= 0.25
    after_peak = np.array(rates.rates[peak_at:])
    assert np.all(np.diff(after_peak) <= 1e-9)  # then it only decays
    # annealed by the clock, near zero at the end: the last batch's rate is set when it
    # starts, and on a loaded machine one slow batch can start a few percent before the end
    # (a step-counted schedule would still be near its peak: 3,200 steps were allowed)
    assert rates.rates[-1] < 0.25 * 0.1


def test_weight_decay_leaves_biases_and_batch_norm_alone():
    model = tiny_model()
    optimizer = make_optimizer({**CFG, "optimizer": "sgd", "schedule": "constant",
                                "learning_rate": 1.0, "weight_decay": 0.1})
    variables = model.trainable_variables
    before = {v.path: np.array(v) for v in variables}
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    for v in variables:  # zero gradients: only the decay moves a weight, by lr * wd = 10%
        factor = 0.9 if v.name == "kernel" else 1.0
        np.testing.assert_allclose(np.array(v), factor * before[v.path], rtol=1e-6,
                                   err_msg=v.path)
    assert {v.name for v in variables} == {"kernel", "bias", "gamma", "beta"}


def test_label_smoothing_matches_the_categorical_definition():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6)
    ours = SmoothedSparseCrossentropy(0.1)(labels, logits)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        keras.ops.one_hot(labels, 5), logits)
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SmoothedSparseCrossentropy(0.0)(labels, logits)) == pytest.approx(float(plain),
                                                                                  rel=1e-5)


def test_a_trial_seed_depends_on_the_search_seed_and_the_trial_only():
    assert trial_seed(0, "0003") == trial_seed(0, "0003")
    assert len({trial_seed(0, "0003"), trial_seed(0, "0004"), trial_seed(1, "0003")}) == 3
    keras.utils.set_random_seed(trial_seed(0, "0003"))
    first = weights_digest(tiny_model(seed=trial_seed(0, "0003")))
    tiny_model(seed=5)  # other models built in between change nothing
    assert weights_digest(tiny_model(seed=trial_seed(0, "0003"))) == first


def test_seed_zero_is_a_fixed_seed():
    from pipeline.search.oracles import HyperbandOracle, RandomOracle

    def draws(oracle_class, **kwargs):
        oracle = oracle_class(objective=kt.Objective("val_accuracy", "max"), seed=0, **kwargs)
        hp = kt.HyperParameters()
        hp.Float("learning_rate", 1e-4, 1.0, sampling="log")
        hp.Choice("width", [8, 16, 32, 64])
        oracle.update_space(hp)
        oracle.first_values = []
        return oracle.seed, [oracle._random_values() for _ in range(4)]

    for oracle_class, kwargs in ((RandomOracle, {"max_trials": 4}),
                                 (HyperbandOracle, {"max_epochs": 3})):
        seed, first = draws(oracle_class, **kwargs)
        assert seed == 0 and draws(oracle_class, **kwargs)[1] == first


def test_adam_decays_through_the_loss_and_adamw_beside_the_gradient():
    from pipeline.config import AugmentationParams
    from pipeline.models.fc import build_fc

    meta = {"num_classes": 3, "image_shape": [4, 4, 3], "mean": [0.0] * 3, "std": [1.0] * 3}
    cfg = {"layers": 1, "units": 8, "shrink": 1.0, "batch_norm": True, "activation": "relu",
           "dropout": 0.0, "weight_decay": 0.04, "learning_rate": 0.01}
    adam = build_fc({**cfg, "optimizer": "adam"}, 3, meta, AugmentationParams(flip=False))
    kernels = [w for w in adam.trainable_weights if w.name == "kernel"]
    assert len(kernels) == 2  # the hidden layer's and the logits'
    expected = sum(0.02 * float(np.sum(np.square(np.array(k)))) for k in kernels)
    assert float(sum(keras.ops.convert_to_numpy(x) for x in adam.losses)) == \
        pytest.approx(expected, rel=1e-5)  # L2 in the loss: its gradient is 0.04 w
    assert make_optimizer({**CFG, **cfg, "optimizer": "adam"}).weight_decay is None
    adamw = build_fc({**cfg, "optimizer": "adamw"}, 3, meta, AugmentationParams(flip=False))
    assert adamw.losses == []
    assert make_optimizer({**CFG, **cfg, "optimizer": "adamw"}).weight_decay == \
        pytest.approx(0.04)


def test_one_update_shows_adam_l2_and_adamw_apart():
    """Inputs of zero give the first kernel no gradient from the data. AdamW then only decays
    it, by rate x decay x w; Adam's L2 gradient goes through Adam's scaling, so its first step
    moves every weight by about the rate, whatever the weight's size."""
    from pipeline.config import AugmentationParams
    from pipeline.models.fc import build_fc

    meta = {"num_classes": 3, "image_shape": [4, 4, 3], "mean": [0.0] * 3, "std": [1.0] * 3}
    cfg = {**CFG, "layers": 1, "units": 8, "shrink": 1.0, "batch_norm": True,
           "activation": "relu", "dropout": 0.0, "weight_decay": 0.1, "learning_rate": 0.001,
           "schedule": "constant"}
    moved = {}
    for name in ("adam", "adamw"):
        model = compile_model(build_fc({**cfg, "optimizer": name}, 3, meta,
                                       AugmentationParams(flip=False, crop_padding=0),
                                       seed=0), {**cfg, "optimizer": name})
        kernel = model.get_layer("dense1").kernel
        before = np.array(kernel)
        model.train_on_batch(np.zeros((8, 32, 32, 3), "float32"), np.arange(8) % 3)
        moved[name] = (before, np.array(kernel) - before)
    before, step = moved["adamw"]
    np.testing.assert_allclose(step, -0.001 * 0.1 * before, rtol=1e-3, atol=1e-9)
    before, step = moved["adam"]
    # Adam's first step is rate x g / (|g| + eps'), g = 0.1 w the L2 gradient, eps' = Keras's
    # epsilon 1e-7 over sqrt(1 - beta_2): about the rate for every weight but the tiniest
    gradient = 0.1 * before
    expected = -0.001 * gradient / (np.abs(gradient) + 1e-7 / np.sqrt(1 - 0.999))
    np.testing.assert_allclose(step, expected, rtol=1e-3, atol=1e-9)
    assert np.median(np.abs(step)) > 0.0009  # against 0.0001 x |w| for AdamW


def _tiny_cnn_hypermodel(space_text: str, **kwargs):
    """A search's hypermodel over a tiny CNN space, 640 training images (10 batches of 64)."""
    import tempfile
    from pathlib import Path

    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel, known_hyperparameters
    from pipeline.spaces import load_space

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cnn.yaml"
        path.write_text(space_text)
        space = load_space(path, "cnn", known_hyperparameters("cnn"))
    meta = {"num_classes": 10, "image_shape": [32, 32, 3], "mean": [0.5] * 3,
            "std": [0.25] * 3}
    return FamilyHyperModel("cnn", space, meta, AugmentationParams(), n_train=640,
                            equal_compute=True, **kwargs)


def test_a_costlier_configuration_gets_its_share_of_the_images():
    from pipeline.models.flops import forward_flops
    from tests.conftest import TINY_CNN_SPACE

    hypermodel = _tiny_cnn_hypermodel(TINY_CNN_SPACE)
    assert hypermodel.cost_basis == "flops"
    default_hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(default_hp)
    default = hypermodel.build(default_hp)
    wide_hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(wide_hp)
    wide_hp.values.update(stages=2, base_filters=12)
    wide = hypermodel.build(wide_hp)
    assert hypermodel.compute_share(default) == 1.0
    share = hypermodel.compute_share(wide)
    assert share == pytest.approx(forward_flops(default) / forward_flops(wide)) and share < 0.7
    # its trial trains that share of its rung's steps, and its schedule ends there
    x, y = np.zeros((640, 32, 32, 3), "uint8"), np.arange(640) % 10
    hypermodel.fit(wide_hp, wide, x, y, epochs=2, verbose=0)
    assert hypermodel.last_schedule.steps == round(2 * 10 * share)
    assert hypermodel.last_schedule.summary()["ended_by"] == "steps"


def test_a_configuration_is_charged_for_its_measured_speed_which_flops_miss():
    """Measured basis: batch 8 has the defaults' FLOPs per image (analytic share 1) but on
    TensorFlow trains fewer images a second (a step's overhead is paid per 8 images, not per
    64); its trial trains its measured share of the rung's steps, timed once: a second trial of
    it reuses the share, and the defaults keep all their steps."""
    from pipeline.search import cost
    from tests.conftest import TINY_CNN_SPACE

    space = TINY_CNN_SPACE.replace("batch_size: {type: fixed, value: 64}",
                                   "batch_size: {type: choice, values: [8, 64], default: 64}")
    hypermodel = _tiny_cnn_hypermodel(space, cost_basis="measured")
    assert hypermodel.cost_basis == "measured"
    x = np.random.default_rng(0).integers(0, 256, (640, 32, 32, 3)).astype("uint8")
    y = np.arange(640) % 10
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values["batch_size"] = 8
    shares = []
    for _ in range(2):
        model = hypermodel.build(hp)
        hypermodel.fit(hp, model, x, y, epochs=1, verbose=0)
        shares.append(hypermodel.last_compute_share)
        summary = hypermodel.last_schedule.summary()
        # 80 batches of 8 at share 1; never fewer than the timing's 10
        assert summary["steps"] == max(10, round(80 * shares[-1]))
        assert summary["ended_by"] == "steps" and summary["schedule_progress"] == 1.0
    assert hypermodel.compute_share(model) == 1.0  # FLOPs see no difference
    # the defaults were timed first (a short run of their own), as the reference
    assert hypermodel.reference_speed > 0 and hypermodel.last_speed > 0
    assert shares[0] == shares[1] == cost.measured_share(hypermodel.last_speed,
                                                         hypermodel.reference_speed)
    if keras.backend.backend() == "tensorflow":
        # a TensorFlow step pays Keras' per-batch overhead; a JAX step is one compiled call,
        # and there batch 8 trained at 0.95 of batch 64's images a second (no charge)
        assert shares[0] < 0.9
    default_hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(default_hp)
    hypermodel.fit(default_hp, hypermodel.build(default_hp), x, y, epochs=1, verbose=0)
    assert hypermodel.last_compute_share == 1.0 and hypermodel.last_schedule.steps == 10


def test_a_measured_share_within_the_noise_is_the_whole_rung():
    from pipeline.search.cost import NOISE_TOLERANCE, measured_share, timeable

    assert measured_share(1000.0, 1000.0) == 1.0
    assert measured_share(1500.0, 1000.0) == 1.0  # faster than the defaults: no more images
    assert measured_share(1000.0 * (1 - NOISE_TOLERANCE) + 1, 1000.0) == 1.0
    assert measured_share(500.0, 1000.0) == 0.5
    # a search is timed only if one epoch at its largest batch holds the timing's steps
    assert timeable(10_000, 512) and not timeable(200, 64)


def test_batch_norm_is_refreshed_while_its_averages_are_stale_and_then_left_alone():
    """The refresh fires at a validation while Keras' moving averages still hold more than
    ``stale_below`` of their start (0.99^64 = 53% > 50%): the statistics are then the
    training images' mean at the current weights; not after (0.99^128 = 28%): Keras' own."""
    from pipeline.training import BatchNormRefresh

    x, y = data(64)
    model = compile_model(tiny_model(), {**CFG, "learning_rate": 0.01})
    refresh = BatchNormRefresh(x, stale_below=0.5)
    seen = []  # per validation: (moving mean, the mean of the layer's inputs at the weights)

    class Statistics(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            bn = self.model.get_layer("bn")
            inputs = keras.Model(self.model.inputs, bn.input)(x)
            seen.append((keras.ops.convert_to_numpy(bn.moving_mean),
                         keras.ops.convert_to_numpy(inputs).mean(axis=0)))

    model.fit(x, y, batch_size=1, epochs=2, validation_data=(x[:8], y[:8]), verbose=0,
              callbacks=[refresh, Statistics()])
    assert refresh.steps == 128 and refresh.refreshed == 1
    (first, first_mean), (second, second_mean) = seen
    np.testing.assert_allclose(first, first_mean, rtol=1e-4, atol=1e-5)
    assert not np.allclose(second, second_mean, rtol=1e-2, atol=1e-3)


def test_a_model_without_batch_norm_is_never_refreshed():
    from pipeline.training import BatchNormRefresh

    x, y = data(64)
    inputs = keras.Input((8,))
    model = compile_model(keras.Model(inputs, keras.layers.Dense(3)(inputs)), CFG)
    refresh = BatchNormRefresh(x)
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[refresh])
    assert refresh.refreshed == 0


OFFSET_RATE = """
import json, sys
import keras
import numpy as np
from pipeline.training import compile_model
from tests.test_training import CFG, data, tiny_model

cfg = {**CFG, "learning_rate": 0.01, "schedule": "constant", "warmup_fraction": 0.0}
x, y = data(16)
found = {}
for optimizer in ("nesterov", "adam"):
    for rate in (1.0, 64.0):
        model = compile_model(tiny_model(seed=0),
                              {**cfg, "optimizer": optimizer, "bn_bias_lr_multiplier": rate})
        before = {w.path: np.array(w) for w in model.trainable_weights}
        model.train_on_batch(x, y)
        found[f"{optimizer} {rate}"] = {w.path: (np.array(w) - before[w.path]).tolist()
                                        for w in model.trainable_weights}
        if rate != 1.0 and optimizer == "adam":
            model.save(sys.argv[1])
            again = keras.models.load_model(sys.argv[1])
            found["loaded"] = [type(again.optimizer).__name__, again.optimizer.offset_rate]
print(json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_batch_norm_offsets_train_at_their_own_rate(backend, tmp_path):
    """bn_bias_lr_multiplier: one update moves batch norm's offsets (beta) that many times
    further than at 1, and every other weight exactly as far, with SGD (Nesterov) and with Adam
    alike (both first steps are linear in the rate), on both backends; the optimizer saves and
    loads with its multiplier."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", OFFSET_RATE, str(tmp_path / "m.keras")],
                         cwd=repo, check=True, capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": backend})
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for optimizer in ("nesterov", "adam"):
        plain, faster = found[f"{optimizer} 1.0"], found[f"{optimizer} 64.0"]
        assert set(plain) == {"dense/kernel", "dense/bias", "bn/gamma", "bn/beta",
                              "logits/kernel", "logits/bias"}
        for path, step in plain.items():
            step, other = np.array(step), np.array(faster[path])
            assert np.abs(step).max() > 0, path  # every weight moved
            expected = 64.0 * step if path == "bn/beta" else step
            np.testing.assert_allclose(other, expected, rtol=1e-4, atol=1e-9, err_msg=path)
    assert found["loaded"] == ["AdamWithOffsetRate", 64.0]
