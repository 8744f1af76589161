"""The lessons' controlled experiments, one function per claim of the lecture.

Each changes one factor of the lessons' base configuration (pipeline/lessons/training.py),
keeps everything else fixed (data, epochs, seed), and returns the numbers its verdict and
figure need, as plain JSON-able values. ``run_setting`` reports every training to the caller
(progress lines, MLflow child runs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.config import AugmentationParams, LessonsParams
from pipeline.lessons.training import (
    NO_AUGMENTATION,
    LessonData,
    base_config,
    build,
    fit,
    predict_correct,
)
from pipeline.lessons.verdicts import end_loss, roughness
from pipeline.training import (
    AUGMENTATION_HPS,
    REFRESH_IMAGES,
    augmentation_policy,
    refresh_batch_norm,
)

# the learning-rate and Adam lessons share it: half decades, fine enough that a band of good
# rates has a width (on whole decades both optimizers' bands were one rate wide)
SGD_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]


@dataclass
class Lab:
    """What every experiment gets: the data, the lessons params and a reporter called once per
    finished training with (claim, setting name, its settings, its fit result), and with
    ``shared=True`` for a training another claim ran first."""

    data: LessonData
    params: LessonsParams
    report: Callable[[str, str, dict, dict], None]
    champion: dict | None = None  # the pipeline's best CNN configuration (ablation cards)
    trained: dict = field(default_factory=dict)  # a training's settings -> its result
    reused: int = 0  # trainings one claim shared with another, not run twice

    def run(self, claim: str, setting: str, cfg: dict, *, epochs: int | None = None,
            family: str = "cnn", augmentation: AugmentationParams | None = None,
            seed: int | None = None, validate_every_epoch: bool = False, **kwargs) -> dict:
        """One training, or, when another claim already trained exactly these settings (same
        configuration, epochs, augmentation, seed, validations and the lessons' own training
        images, no callbacks), its result: a shared baseline, the same weights and data
        order."""
        epochs, seed = epochs or self.params.epochs, self.params.seed if seed is None else seed
        augmentation = augmentation or NO_AUGMENTATION
        key = None if kwargs else json.dumps(
            [family, cfg, epochs, seed, augmentation.model_dump(), validate_every_epoch],
            sort_keys=True, default=str)
        if key in self.trained:
            self.reused += 1
            self.report(claim, setting, {"family": family, **cfg}, self.trained[key], shared=True)
            return self.trained[key]
        result = fit(cfg, self.data, epochs, family=family, augmentation=augmentation,
                     seed=seed, validate_every_epoch=validate_every_epoch, **kwargs)
        self.report(claim, setting, {"family": family, **cfg}, result)
        if key is not None:
            self.trained[key] = result
        return result


def seeds_of(lab: Lab) -> list[int]:
    """The seeds of a claim judged on paired seeds: ``lessons.seeds`` of them from
    ``lessons.seed``; every arm of the claim trains from each (same weights, same data order)."""
    return [lab.params.seed + i for i in range(lab.params.seeds)]


def _plain(**changes) -> dict:
    """The base CNN as the optimizer lessons use it: no batch norm (which would hide the
    rate's effect), unscaled logits, a constant rate."""
    return base_config(batch_norm=False, logit_scale=1.0, schedule="constant", **changes)


def learning_rate(lab: Lab) -> dict:
    """Plain SGD at a constant rate, 1e-4 to 10 in half decades, on the plain CNN (no batch
    norm, unscaled logits): final training loss and validation accuracy against the rate."""
    runs = [lab.run("learning_rate", f"sgd lr={rate:g}",
                    _plain(optimizer="sgd", learning_rate=rate)) for rate in SGD_RATES]
    return {"rates": SGD_RATES, "val_accuracy": [r["val_accuracy"] for r in runs],
            "final_loss": [r["final_loss"] for r in runs],
            "loss_curves": [r["history"].get("loss", []) for r in runs],
            "first_loss": math.log(lab.data.num_classes)}


def adam_robustness(lab: Lab, sgd: dict | None = None) -> dict:
    """Adam on the same plain CNN and the same rates as the learning-rate lesson, beside
    that lesson's SGD results (``sgd``, else it runs)."""
    sgd = sgd or learning_rate(lab)
    runs = [lab.run("adam_robustness", f"adam lr={rate:g}",
                    _plain(optimizer="adam", learning_rate=rate)) for rate in SGD_RATES]
    return {"rates": SGD_RATES, "sgd": sgd["val_accuracy"],
            "adam": [r["val_accuracy"] for r in runs], "chance": 1 / lab.data.num_classes}


def momentum(lab: Lab, rate: float = 0.02, beta: float = 0.9) -> dict:
    """Heavy-ball momentum and Nesterov at a constant rate, and one baseline for both
    questions: plain SGD at the step size momentum's steps average to, rate / (1 - beta); each
    from every seed. Per-step losses: where they ended and how much they zigzag."""
    variants = {}
    for name, optimizer, lr in (("momentum", "momentum", rate), ("nesterov", "nesterov", rate),
                                ("sgd_same_step", "sgd", rate / (1 - beta))):
        runs = [lab.run("momentum", f"{name} lr={lr:g} seed={seed}",
                        base_config(optimizer=optimizer, learning_rate=lr, momentum=beta,
                                    schedule="constant"), seed=seed)
                for seed in seeds_of(lab)]
        curves = [run["step_losses"] for run in runs]
        variants[name] = {"loss_curve": curves[0], "learning_rate": lr,
                          "end_loss": [end_loss(c) for c in curves],
                          "roughness": [roughness(c) for c in curves],
                          "val_accuracy": [run["val_accuracy"] for run in runs]}
    return {"learning_rate": rate, "momentum": beta, "variants": variants}


BATCH_SIZES = [32, 128, 512]


def batch_size(lab: Lab, draws: int = 5) -> dict:
    """The base CNN at batch 32, 128 and 512 (same rate): trained for the same epochs (equal
    examples; batch 32 takes 16 times the steps of batch 512) and for the steps batch 128
    takes in them (equal steps). Then the noise itself, with the weights held fixed (the
    batch-128 run's): ``draws`` gradients from disjoint mini-batches of each size, and the
    mean squared distance of each from the gradient over all training images, relative to
    that gradient's squared norm."""
    from pipeline.lessons.gradients import gradient_vector

    n = len(lab.data.y_train)
    per_epoch = {b: math.ceil(n / b) for b in BATCH_SIZES}
    equal_examples = {b: lab.run("batch_size", f"batch {b}", base_config(batch_size=b))
                      for b in BATCH_SIZES}
    steps = lab.params.epochs * per_epoch[128]
    equal_steps = {b: equal_examples[b] if b == 128 else lab.run(
        "batch_size", f"batch {b}, {steps} steps", base_config(batch_size=b),
        epochs=max(1, round(steps / per_epoch[b]))) for b in BATCH_SIZES}
    model = equal_examples[128]["model"]
    x, y = lab.data.x_train, lab.data.y_train
    full = gradient_vector(model, x, y, model.loss)
    order = np.random.default_rng(lab.params.seed).permutation(n)
    noise = []
    for b in BATCH_SIZES:
        batches = [order[i * b:(i + 1) * b] for i in range(max(1, min(draws, n // b)))]
        spread = [np.sum((gradient_vector(model, x[i], y[i], model.loss) - full) ** 2)
                  for i in batches]
        noise.append(float(np.mean(spread) / max(np.sum(full ** 2), 1e-30)))
    return {"batch_sizes": BATCH_SIZES, "gradient_noise": noise, "draws": draws,
            "equal_steps": steps,
            "val_accuracy": [equal_examples[b]["val_accuracy"] for b in BATCH_SIZES],
            "val_accuracy_equal_steps": [equal_steps[b]["val_accuracy"] for b in BATCH_SIZES],
            "loss_curves": [equal_examples[b]["step_losses"] for b in BATCH_SIZES]}


def annealing(lab: Lab) -> dict:
    """A constant rate against decaying schedules, same peak and budget (twice the epochs of
    the other lessons), several seeds."""
    seeds = seeds_of(lab)
    epochs = 2 * lab.params.epochs  # annealing pays near the end of training: let it get there
    schedules = {name: [lab.run("annealing", f"{name} seed={seed}", base_config(schedule=name),
                                seed=seed, epochs=epochs)["val_accuracy"]
                        for seed in seeds]
                 for name in ("constant", "step", "cosine", "linear")}
    return {"schedules": schedules, "seeds": len(seeds), "epochs": epochs}


def shift_images(images: np.ndarray, pixels: int) -> np.ndarray:
    """Move every image right and down by ``pixels``, filling the uncovered border with black."""
    if pixels == 0:
        return images
    out = np.zeros_like(images)
    out[:, pixels:, pixels:, :] = images[:, :-pixels, :-pixels, :]
    return out


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    from scipy import ndimage

    if degrees == 0:
        return images
    rotated = ndimage.rotate(images.astype(np.float32), degrees, axes=(1, 2), reshape=False,
                             order=1, mode="constant", cval=0.0)
    return np.clip(np.rint(rotated), 0, 255).astype(np.uint8)


SHIFTS = [0, 2, 4, 6, 8]
ROTATIONS = [0, 10, 20, 30]


def inductive_bias(lab: Lab) -> dict:
    """The lessons' CNN against an FC net with about four times its parameters (2 hidden
    layers of 32: the CNN's bias has to beat the FC's size), same recipe, from each seed; then
    both on shifted and rotated test images: accuracy per seed."""
    x, y = lab.data.x_test, lab.data.y_test

    def scores(runs: list[dict], transform, amounts) -> dict:
        return {str(a): [float(predict_correct(run["model"], transform(x, a), y).mean())
                         for run in runs] for a in amounts}

    result = {}
    for family, cfg in (("cnn", base_config()),
                        ("fc", base_config("fc", layers=2, units=32, shrink=1.0,
                                           dropout=0.0))):
        runs = [lab.run("inductive_bias", f"{family} seed={seed}", cfg, family=family,
                        seed=seed) for seed in seeds_of(lab)]
        result[family] = {"params": runs[0]["params"],
                          "shift": scores(runs, shift_images, SHIFTS),
                          "rotation": scores(runs, rotate_images, ROTATIONS)}
    return result


def _overfitting_subset(lab: Lab) -> tuple[np.ndarray, np.ndarray]:
    """A third of the lessons' training images, every class alike: small enough to overfit."""
    from pipeline.data.split import per_class_subset

    per_class = len(lab.data.y_train) // lab.data.num_classes
    index = per_class_subset(lab.data.y_train, max(1, per_class // 3), lab.params.seed)
    return lab.data.x_train[index], lab.data.y_train[index]


def regularisation_gap(lab: Lab) -> dict:
    """No regularisation, augmentation (flip, crop), dropout 0.3, both: on a third of the
    training subset for twice the epochs, so that the net can overfit, from each seed.
    Training accuracy is measured in inference mode on the training images."""
    x, y = _overfitting_subset(lab)
    augmented = AugmentationParams(flip=True, crop_padding=4)
    settings = {}
    for name, dropout, policy in (("none", 0.0, None), ("augmentation", 0.0, augmented),
                                  ("dropout", 0.3, None), ("both", 0.3, augmented)):
        runs = [lab.run("regularisation_gap", f"{name} seed={seed}",
                        base_config(dropout=dropout), epochs=2 * lab.params.epochs,
                        augmentation=policy, x_train=x, y_train=y, seed=seed)
                for seed in seeds_of(lab)]
        settings[name] = {
            "train_accuracy": [float(predict_correct(r["model"], x, y).mean()) for r in runs],
            "val_accuracy": [r["val_accuracy"] for r in runs]}
    return {"train_images": len(y), "seeds": lab.params.seeds, "settings": settings}


class WatchedStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping that notes where it would stop and which weights it would restore
    (``stop``), then lets training run to the end: one training gives both the early-stopped
    net and the net trained to the end, the same trajectory up to the stop."""

    def __init__(self, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.stop: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.stop, self.last_epoch = None, 0

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        if self.stop is not None:
            return
        ending = self.model.stop_training  # the budget's last epoch, or a NaN
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and not ending:  # its own stop: noted, training goes on
            self.model.stop_training = False
            self._note(epoch)

    def on_train_end(self, logs=None):  # never restores: the caller holds both weights
        if self.stop is None and self.best_weights is not None:
            self._note(self.last_epoch)  # training ended first: what Keras would restore

    def _note(self, epoch: int) -> None:
        self.stop = {"weights": self.best_weights, "best_epoch": self.best_epoch + 1,
                     "stopped_epoch": epoch + 1}


def early_stopping(lab: Lab) -> dict:
    """A net that can overfit (a third of the subset, constant rate, no regularisation),
    trained from each seed for 4x the lessons' epochs, watched by Keras's EarlyStopping
    (validation loss, patience 2, best weights restored): the weights it would restore when it
    stops against the weights trained to the end, both from one training (the stopped run is
    the full run's start). Both are scored on the test images, which chose no epoch."""
    x, y = _overfitting_subset(lab)
    epochs = 4 * lab.params.epochs
    cfg = base_config(schedule="constant")
    found = {"restored_test_accuracy": [], "full_test_accuracy": [], "best_epoch": [],
             "stopped_epoch": [], "val_loss": [], "loss": []}
    for seed in seeds_of(lab):
        watcher = WatchedStopping(monitor="val_loss", patience=2)
        run = lab.run("early_stopping", f"seed={seed}", cfg, epochs=epochs,
                      callbacks=(watcher,), x_train=x, y_train=y, seed=seed,
                      validate_every_epoch=True)
        model, trained = run["model"], run["model"].get_weights()
        found["full_test_accuracy"].append(_test_accuracy(lab, model))
        model.set_weights(watcher.stop["weights"])
        found["restored_test_accuracy"].append(_test_accuracy(lab, model))
        model.set_weights(trained)
        found["best_epoch"].append(watcher.stop["best_epoch"])
        found["stopped_epoch"].append(watcher.stop["stopped_epoch"])
        found["val_loss"].append([float(v) for v in run["history"]["val_loss"]])
        found["loss"].append([float(v) for v in run["history"]["loss"]])
    return {**found, "epochs_allowed": epochs, "train_images": len(y)}


def _test_accuracy(lab: Lab, model) -> float:
    return float(predict_correct(model, lab.data.x_test, lab.data.y_test).mean())


def vanishing_gradients(lab: Lab, steps: int = 50) -> dict:
    """Gradient RMS per weight, layer by layer, of a 10-layer, 64-wide fully connected stack
    with sigmoid, tanh or ReLU, with and without batch norm, on one batch of 256 images: at
    initialisation and after whole epochs of SGD (rate 0.05) that make 50 steps at least,
    with the validation accuracy those steps reached (does the gradient show in training?)."""
    from pipeline.lessons.gradients import kernel_gradient_rms

    batch = slice(0, 256)
    x, y = lab.data.x_train[batch], lab.data.y_train[batch]
    configs = {}
    for activation in ("sigmoid", "tanh", "relu"):
        for norm in (False, True):
            name = activation + ("_bn" if norm else "")
            cfg = base_config("fc", layers=10, units=64, shrink=1.0, dropout=0.0,
                              activation=activation, batch_norm=norm, optimizer="sgd",
                              learning_rate=0.05, schedule="constant", weight_decay=0.0)
            model = build(cfg, lab.data, "fc", seed=lab.params.seed)
            init = kernel_gradient_rms(model, x, y, model.loss)
            per_epoch = math.ceil(len(lab.data.y_train) / cfg["batch_size"])
            epochs = max(1, math.ceil(steps / per_epoch))
            model.fit(lab.data.x_train, lab.data.y_train, batch_size=cfg["batch_size"],
                      epochs=epochs, verbose=0)
            refresh_batch_norm(model, lab.data.x_train[:REFRESH_IMAGES])
            trained = kernel_gradient_rms(model, x, y, model.loss)
            configs[name] = {"layers": [n for n, _ in init], "init": [v for _, v in init],
                             "trained": [v for _, v in trained],
                             "val_accuracy": float(predict_correct(
                                 model, lab.data.x_val, lab.data.y_val).mean())}
            lab.report("vanishing_gradients", name, {"family": "fc", **cfg},
                       {"first_layer_grad_init": init[0][1], "last_layer_grad_init": init[-1][1]})
    return {"configs": configs, "steps": epochs * per_epoch}


BN_RATES = [0.02, 0.1, 0.5]  # momentum SGD, constant: each arm picks its own best
BN_DEPTHS = {"4": 1, "13": 4}  # conv layers -> convs per stage (plain stacks, no residual)
# the landscape probe's steps along the gradient, in units of the training rate
LANDSCAPE_STEPS = [0.5, 1.0, 2.0, 4.0]
PROBE_IMAGES = 256  # the probe's batch: the first training images, the same for every arm


class LandscapeProbe(keras.callbacks.Callback):
    """At the training's end, the loss landscape around the trained weights
    (``loss_along_gradient``), with steps of ``LANDSCAPE_STEPS`` times the training rate, on
    one fixed batch. Once, not at every epoch: the probes cost 2 of a pass's 34 minutes."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rate: float):
        super().__init__()
        self.images, self.labels = images, labels
        self.steps = [rate * s for s in LANDSCAPE_STEPS]
        self.found: dict | None = None

    def on_train_end(self, logs=None):
        from pipeline.lessons.gradients import loss_along_gradient

        self.found = loss_along_gradient(self.model, self.images, self.labels,
                                         self.model.loss, self.steps)

    def summary(self) -> dict:
        """Each measure at the trained weights (NaN once the run diverged: no landscape)."""
        return {key: self.found[key] if self.found else math.nan
                for key in ("loss_range", "gradient_change")}


def batch_norm(lab: Lab) -> dict:
    """With and without batch norm at two depths (4 and 13 conv layers, no residual), each
    arm at its own best constant rate (momentum SGD): a small grid of rates on the first seed,
    validation choosing; the arms at their chosen rates again on the other seeds. Validation
    accuracy per (depth, arm, rate) on the first seed, and per seed at the chosen rates. The
    first seed's grid also probes the loss landscape at the training's end (``landscape``: per
    depth and arm, one probe summary per rate; the ``bn_landscape`` claim reads it)."""
    seeds = seeds_of(lab)
    batch = slice(0, PROBE_IMAGES)

    def train(depth: str, norm: bool, rate: float, seed: int, probe=None) -> float:
        cfg = base_config(batch_norm=norm, convs_per_stage=BN_DEPTHS[depth],
                          learning_rate=rate, schedule="constant", optimizer="momentum")
        name = f"{depth} conv layers bn={norm} lr={rate:g} seed={seed}"
        return lab.run("batch_norm", name, cfg, seed=seed,
                       callbacks=(probe,) if probe else ())["val_accuracy"]

    grid, chosen, per_seed, landscape = {}, {}, {}, {}
    for depth in BN_DEPTHS:
        for arm, norm in (("bn", True), ("plain", False)):
            probes = [LandscapeProbe(lab.data.x_train[batch], lab.data.y_train[batch], rate)
                      for rate in BN_RATES]
            scores = [train(depth, norm, rate, seeds[0], probe)
                      for rate, probe in zip(BN_RATES, probes, strict=True)]
            grid[f"{depth}/{arm}"] = scores
            landscape[f"{depth}/{arm}"] = [probe.summary() for probe in probes]
            best = int(np.nanargmax(scores)) if not np.all(np.isnan(scores)) else 0
            chosen[f"{depth}/{arm}"] = BN_RATES[best]
            per_seed[f"{depth}/{arm}"] = [scores[best]] + [
                train(depth, norm, BN_RATES[best], seed) for seed in seeds[1:]]
    return {"rates": BN_RATES, "depths": list(BN_DEPTHS), "grid": grid, "chosen_rate": chosen,
            "val_accuracy": per_seed, "seeds": len(seeds), "landscape": landscape,
            "landscape_steps": LANDSCAPE_STEPS, "probe_images": PROBE_IMAGES}


def bn_landscape(lab: Lab, found: dict | None = None) -> dict:
    """The loss landscape with and without batch norm, from the batch-norm lesson's grid
    (``found``, else it runs): pairs of the same depth, rate and seed, one probe summary per
    arm (no training of its own)."""
    found = found or batch_norm(lab)
    pairs = [{"depth": depth, "rate": rate,
              **{arm: {**found["landscape"][f"{depth}/{arm}"][i],
                       "val_accuracy": found["grid"][f"{depth}/{arm}"][i]}
                 for arm in ("bn", "plain")}}
             for depth in found["depths"] for i, rate in enumerate(found["rates"])]
    return {"pairs": pairs, "steps": found["landscape_steps"],
            "probe_images": found["probe_images"], "chance": 1 / lab.data.num_classes}


ABLATIONS = {  # name -> (what changes in the champion's configuration, when it applies)
    "batch_norm": lambda c: {"batch_norm": False},
    "augmentation": lambda c: {hp: (False if isinstance(c[hp], bool) else 0)
                               for hp in AUGMENTATION_HPS if hp in c},
    "residual": lambda c: {"residual": False},
    "schedule": lambda c: {"schedule": "constant"},
    "optimizer": lambda c: ({"optimizer": "adamw", "learning_rate": 0.002}
                            if c.get("optimizer") in ("sgd", "momentum", "nesterov")
                            else {"optimizer": "nesterov", "learning_rate": 0.1}),
}


def ablations(lab: Lab) -> dict:
    """The champion's configuration (the pipeline's best CNN, at ``ablation_base_filters``
    base filters where set) retrained on the lessons' data for ``ablation_epochs``, then with
    one part removed at a time, each from every seed: test accuracy per seed, paired by seed."""
    from pipeline.families import FAMILIES

    width = lab.params.ablation_base_filters
    champion = {**lab.champion, **({"base_filters": width} if width else {})}
    known = set(FAMILIES["cnn"].defaults) | set(AUGMENTATION_HPS)
    epochs = lab.params.ablation_epochs

    def train(name: str, cfg: dict) -> list[float]:
        return [float(predict_correct(
            lab.run("ablations", f"{name} seed={seed}", cfg, epochs=epochs, seed=seed,
                    augmentation=augmentation_policy(cfg))["model"],
            lab.data.x_test, lab.data.y_test).mean()) for seed in seeds_of(lab)]

    base = train("champion", champion)
    cards = {}
    for name, change in ABLATIONS.items():
        changes = change(champion)
        if name == "residual" and not champion.get("residual"):
            continue  # nothing to remove
        cards[name] = {"changes": changes, "accuracy": train(f"without {name}",
                                                             {**champion, **changes})}
    return {"baseline_accuracy": base, "test_images": len(lab.data.y_test), "epochs": epochs,
            "seeds": lab.params.seeds,
            "champion": {k: v for k, v in champion.items() if k in known}, "ablations": cards}


# fully connected, batch norm: one hidden layer of 256 and four of 212 have about the same
# parameters (789k and 790k: the first layer's 3072 inputs dominate); 1024 is four times 256
SHALLOW_WIDTHS = [256, 1024]
DEEP = {"layers": 4, "units": 212}


def depth_vs_width(lab: Lab) -> dict:
    """Fully connected nets from each seed: one hidden layer of 256 units, the same four times
    wider (1024), and four hidden layers at about the 256-unit net's parameters. Validation
    accuracy per seed and each net's parameters."""
    nets = {f"shallow_{w}": {"layers": 1, "units": w} for w in SHALLOW_WIDTHS}
    nets["deep"] = DEEP
    found = {}
    for name, shape in nets.items():
        cfg = base_config("fc", shrink=1.0, dropout=0.0, **shape)
        runs = [lab.run("depth_vs_width", f"{name} seed={seed}", cfg, family="fc", seed=seed)
                for seed in seeds_of(lab)]
        found[name] = {**shape, "params": runs[0]["params"],
                       "val_accuracy": [run["val_accuracy"] for run in runs]}
    return {"nets": found}


def recolour(images: np.ndarray) -> np.ndarray:
    """A slight, fixed colour change: contrast down to 70% around each image's mean, half the
    way to grey, then 20 levels brighter."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = mean + 0.7 * (x - mean)
    grey = x.mean(axis=3, keepdims=True)
    x = 0.5 * x + 0.5 * grey + 20.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def occlude(images: np.ndarray, size: int = 12, seed: int = 0) -> np.ndarray:
    """A mid-grey square of ``size`` pixels at a random place in each image (fixed by
    ``seed``): the object partly hidden."""
    rng = np.random.default_rng(seed)
    out = images.copy()
    for image, (top, left) in zip(out, rng.integers(0, 33 - size, (len(out), 2)), strict=True):
        image[top:top + size, left:left + size] = 128
    return out


def robustness(lab: Lab) -> dict:
    """The lessons' CNN with flip and crop, against the same with the lecture's colour jitter
    (brightness, contrast, saturation 0.2) and random erasing (p 0.5) added, from each seed;
    both scored on the clean test images, a fixed colour change of them and a partly hidden
    copy."""
    plain = AugmentationParams(flip=True, crop_padding=4)
    jittered = plain.model_copy(update={"brightness": 0.2, "contrast": 0.2,
                                        "saturation": 0.2, "erasing": 0.5})
    x, y = lab.data.x_test, lab.data.y_test
    views = {"clean": x, "colour": recolour(x), "occluded": occlude(x, seed=lab.params.seed)}
    found = {}
    for name, policy in (("flip_crop", plain), ("jitter_erasing", jittered)):
        runs = [lab.run("robustness", f"{name} seed={seed}", base_config(),
                        epochs=2 * lab.params.epochs, augmentation=policy, seed=seed)
                for seed in seeds_of(lab)]
        found[name] = {view: [float(predict_correct(run["model"], images, y).mean())
                              for run in runs] for view, images in views.items()}
    return {"arms": found, "epochs": 2 * lab.params.epochs}


# one regularisation strength for all three: the weight each decay takes away per step at the
# peak rate, 5e-5 (the lessons' Nesterov at 0.1 with 5e-4): Adam's as L2 in the loss, AdamW's
# decoupled (pipeline/training.py). One schedule for all three, linear decay from the start:
# the Nesterov arm is then the annealing lesson's linear arm, trained once for both
OPTIMIZER_ARMS = {"nesterov": {"optimizer": "nesterov", "learning_rate": 0.1,
                               "weight_decay": 5e-4},
                  "adam": {"optimizer": "adam", "learning_rate": 0.005, "weight_decay": 0.01},
                  "adamw": {"optimizer": "adamw", "learning_rate": 0.005, "weight_decay": 0.01}}


def adam_generalisation(lab: Lab) -> dict:
    """Nesterov SGD, Adam (L2 decay) and AdamW (decoupled decay) on the lessons' CNN at their
    reference rates and one decay strength, a linear decay from the start, for twice the
    lessons' epochs, from each seed: validation accuracy after every epoch, and training
    accuracy at the end (inference mode on the training images)."""
    found = {}
    for name, changes in OPTIMIZER_ARMS.items():
        cfg = base_config(schedule="linear", **changes)
        runs = [lab.run("adam_generalisation", f"{name} seed={seed}", cfg,
                        epochs=2 * lab.params.epochs, seed=seed, validate_every_epoch=True)
                for seed in seeds_of(lab)]
        found[name] = {
            "val_accuracy_curve": [run["history"].get("val_accuracy", []) for run in runs],
            "val_accuracy": [run["val_accuracy"] for run in runs],
            "train_accuracy": [float(predict_correct(run["model"], lab.data.x_train,
                                                     lab.data.y_train).mean())
                               for run in runs]}
    return {"arms": found, "epochs": 2 * lab.params.epochs}

