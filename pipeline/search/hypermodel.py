"""A family's KerasTuner hypermodel: a declarative space over the family's defaults, built into
a compiled model and trained under a budget."""

from __future__ import annotations

import contextlib
import math

import keras
import keras_tuner as kt

from pipeline.config import AugmentationParams
from pipeline.errors import ConfigError
from pipeline.families import FAMILIES
from pipeline.feed import fit_inputs
from pipeline.models.cnn import BLOCK_STAGES, HEADS
from pipeline.search import cost
from pipeline.spaces import SearchSpace, load_space
from pipeline.training import (
    AUGMENTATION_HPS,
    RECIPE_DEFAULTS,
    REFERENCE_RATES,
    REFRESH_IMAGES,
    SCHEDULES,
    UNIT_HPS,
    BatchNormRefresh,
    augmentation_policy,
    averaging_callbacks,
    budget_schedule,
    compile_model,
    resolve_units,
)


def known_hyperparameters(family: str) -> set[str]:
    return (set(RECIPE_DEFAULTS) | set(AUGMENTATION_HPS) | UNIT_HPS
            | set(FAMILIES[family].defaults))


def _one_of(names) -> callable:
    return lambda value: None if value in names else f"should be one of {', '.join(names)}"


def _keras_name(get, what: str) -> callable:
    def problem(value):
        try:
            get(value)
        except (ValueError, TypeError):
            return f"not a name Keras knows for {what}"
        return None
    return problem


# the named values a builder takes: a misspelt one would fail each trial that draws it, so a
# space file's are checked when it is loaded
NAMED_VALUES = {
    "optimizer": _one_of(tuple(REFERENCE_RATES)),
    "schedule": _one_of(tuple(SCHEDULES)),
    "head": _one_of(HEADS),
    "block_stages": _one_of(BLOCK_STAGES),
    "activation": _keras_name(keras.activations.get, "an activation (e.g. relu, gelu)"),
    "conv_init": _keras_name(keras.initializers.get,
                             "an initializer (e.g. glorot_uniform, he_normal)"),
}


def load_family_space(path, family: str) -> SearchSpace:
    """A family's space file checked against its builder: every name it declares and every
    value of NAMED_VALUES it can draw; ConfigError (file, key, value) on the first fault."""
    space = load_space(path, family=family, known=known_hyperparameters(family))
    for entry in space.entries:
        check = NAMED_VALUES.get(entry.name)
        if check is None:
            continue
        for value in entry.possible_values() or []:
            if fault := check(value):
                raise ConfigError(space.path, f"hyperparameters.{entry.name}", value, fault)
    return space


def trial_defaults(family: str, policy: AugmentationParams) -> dict:
    """The value of every hyperparameter a trial reads when its space leaves it out: the
    training recipe's, the augmentation policy's (params.yaml), then the family's own."""
    policy_defaults = {hp: getattr(policy, field) for hp, field in AUGMENTATION_HPS.items()}
    return {**RECIPE_DEFAULTS, **policy_defaults, **FAMILIES[family].defaults}


class FamilyHyperModel(kt.HyperModel):
    """Builds and compiles one family's model from a declarative space plus defaults, and
    trains it under a budget: ``epochs`` over ``n_train`` images, with a schedule that ends
    exactly where the budget does.

    ``equal_compute`` (a search's trials): no configuration gets more compute than the
    space's defaults at the same rung; a costlier one trains on proportionally fewer images,
    as the final training's clock would cut it. ``cost_basis``: how a configuration's cost is known
    (search/cost.py): ``measured``, its training images a second timed once over a few of
    its own steps against the defaults'; ``flops``, forward FLOPs per image (analytic: the same
    budget on a busy machine or an idle one; also where epochs are too short to time).

    ``precision``: the Keras dtype policy every model is built in. Set again at each build,
    because ``keras.backend.clear_session()``, which KerasTuner calls before every trial,
    resets the global policy to float32. None: the global policy as it is at build time.
    """

    def __init__(self, family: str, space: SearchSpace, meta: dict, policy: AugmentationParams,
                 n_train: int, seed: int | None = None, equal_compute: bool = False,
                 precision: str | None = None, cost_basis: str = "flops"):
        super().__init__(name=family)
        self.family, self.space, self.meta, self.seed = family, space, meta, seed
        self.precision = precision
        self.n_train, self.equal_compute = n_train, equal_compute
        self._reference_flops = None
        self.last_compute_share = 1.0  # the share of its rung's images the last fit got
        self.builder = FAMILIES[family].builder
        self.defaults = trial_defaults(family, policy)
        self.last_schedule = None
        largest_batch = max(self._batch_sizes())
        self.cost_basis = "measured" if cost_basis == "measured" and \
            cost.timeable(n_train, largest_batch) else "flops"
        self.reference_speed = None  # the defaults' training images a second (measured basis)
        self.measured: dict[str, tuple[float, float]] = {}  # config_key: (images/s, share)
        self.last_speed = None  # the last fit's measured images a second, if it was timed

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def config(self, hp) -> dict:
        """Every hyperparameter the builder reads: the space's values over the defaults, with
        the rate and decay worked out from their units (training.resolve_units)."""
        return resolve_units({**self.defaults, **self.space.declare(hp)})

    def logged_config(self, hp) -> dict:
        """What a trial's run shows: every value it trains with, except a searched value whose
        condition this trial does not meet (momentum for Adam), which would mislead."""
        active = self.space.declare(hp)
        inactive = set(self.space.names()) - set(active)
        return {k: v for k, v in resolve_units({**self.defaults, **active}).items()
                if k not in inactive}

    def build(self, hp):
        if self.precision is not None:
            import keras

            keras.mixed_precision.set_global_policy(self.precision)
        cfg = self.config(hp)
        meta = {**self.meta, "train_steps_per_epoch": math.ceil(self.n_train / cfg["batch_size"])}
        model = self.builder(cfg, self.meta["num_classes"], meta, augmentation_policy(cfg),
                             seed=self.seed)
        return compile_model(model, cfg)

    def _batch_sizes(self) -> list[int]:
        entry = next((e for e in self.space.entries if e.name == "batch_size"), None)
        values = entry.possible_values() if entry is not None else None
        return [int(v) for v in values] if values else [int(self.defaults["batch_size"])]

    def compute_share(self, model) -> float:
        """The analytic share of a rung's images ``model`` may train on: 1 up to the
        defaults' forward FLOPs per image, less in proportion above them."""
        from pipeline.models.flops import forward_flops

        if self._reference_flops is None:
            self._reference_flops = forward_flops(self.build(kt.HyperParameters()))
        return min(1.0, self._reference_flops / max(forward_flops(model), 1))

    def fit(self, hp, model, *args, epochs: int = 1, seconds: float | None = None,
            callbacks=(), **kwargs):
        """Trains from epoch 0 for ``epochs`` (a Hyperband rung restarts from scratch with a
        complete schedule for its own budget, so its score is that of a whole run)."""
        kwargs.pop("initial_epoch", None)
        cfg = self.config(hp)
        full_steps = math.ceil(self.n_train / cfg["batch_size"]) * epochs
        timer = None
        self.last_speed = None
        if not self.equal_compute:
            self.last_compute_share = 1.0
        elif self.cost_basis == "flops" or len(args) != 2:
            self.last_compute_share = self.compute_share(model)
        else:
            timer = self._share_from_speed(cfg, full_steps, model, *args)
        steps = max(1, round(full_steps * self.last_compute_share))
        self.last_schedule = budget_schedule(cfg, steps, seconds)
        # a trial's 40-120 steps leave batch norm's moving averages stale: refreshed before
        # each validation until they hold under 1% of their start (bench/README.md)
        refresh = [BatchNormRefresh(args[0][:REFRESH_IMAGES], stale_below=0.01)] if args else []
        callbacks = [*averaging_callbacks(cfg), *refresh, *callbacks, self.last_schedule,
                     *([timer] if timer else [])]
        if len(args) == 2:  # training arrays: one input pipeline for the whole run
            return model.fit(**fit_inputs(*args, cfg["batch_size"]), epochs=epochs,
                             callbacks=callbacks, **kwargs)
        return model.fit(*args, batch_size=cfg["batch_size"], epochs=epochs,
                         callbacks=callbacks, **kwargs)

    def _share_from_speed(self, cfg: dict, full_steps: int, model, x, y):
        """Sets ``last_compute_share`` for a configuration on the measured basis. Known: its
        share. Not yet: 1 until a timer over its first steps measures it, then the
        schedule's steps shrink to its share (the rate's schedule moves on from there; a trial
        never trains fewer steps than its timing took). The defaults' own timing is the
        reference; a configuration timed before them has the reference timed first, on a copy
        of the defaults that trains the timing's ten steps."""
        key = cost.config_key(cfg)
        if key in self.measured:
            self.last_speed, self.last_compute_share = self.measured[key]
            return None
        is_defaults = cfg == self.config(kt.HyperParameters())
        if self.reference_speed is None and not is_defaults:
            self._time_the_defaults(x, y, like=model)
        self.last_compute_share = 1.0

        def timed(speed: float) -> None:
            if is_defaults and self.reference_speed is None:
                self.reference_speed = speed
            share = cost.measured_share(speed, self.reference_speed)
            self.measured[key] = (round(speed, 1), share)
            self.last_speed, self.last_compute_share = self.measured[key]
            self.last_schedule.shorten_to(round(full_steps * share))

        return cost.ThroughputTimer(cfg["batch_size"], timed)

    def _time_the_defaults(self, x, y, like) -> None:
        """The defaults' images a second, timed as a trial's are, on the devices ``like`` (a
        trial's model) trains on: a data-parallel trial is compared with data-parallel
        defaults."""
        cfg = self.config(kt.HyperParameters())
        strategy = getattr(like, "distribute_strategy", None)  # TensorFlow's; None on JAX
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = self.build(kt.HyperParameters())
        steps = cost.TIMING_SKIP + cost.TIMING_STEPS
        timer = cost.ThroughputTimer(cfg["batch_size"], lambda speed: None, stop=True)
        schedule = budget_schedule(cfg, steps, None)
        model.fit(**fit_inputs(x, y, cfg["batch_size"]), epochs=1, verbose=0,
                  callbacks=[*averaging_callbacks(cfg), schedule, timer])
        self.reference_speed = timer.images_per_second
        self.measured[cost.config_key(cfg)] = (round(timer.images_per_second, 1), 1.0)
