"""Read params.yaml and validate it into typed objects before any work starts.

Every problem becomes one line naming the file, the key and the value at fault, e.g.
``params.yaml: prepare.val_fraction = 1.5: should be less than 1``.
Each DVC stage reads only its own sections, so DVC reruns exactly what a change touches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.data.catalog import DATASETS
from pipeline.errors import MISSING, ConfigError
from pipeline.families import FAMILY_NAMES
from pipeline.tracking.names import DEFAULT_EXPERIMENT
from pipeline.workspace import home

DEFAULT_PARAMS = Path("params.yaml")
SOURCE_KEYWORDS = ("keras-cache", "download")

Fraction = Annotated[float, Field(gt=0, lt=1)]
FamilyName = Literal[FAMILY_NAMES]  # cnn | fc
Probability = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    """A params section: unknown keys and loose types are errors, not guesses."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PrepareParams(Section):
    dataset: Literal["cifar10", "cifar100"] = "cifar10"
    label_mode: Literal["fine", "coarse"] = "fine"  # CIFAR-100 only: 100 or 20 classes
    # A folder in the original python format, a published .tar.gz, "keras-cache" (what
    # keras.datasets left under ~/.keras) or "download" (through Keras, checksum verified).
    # Relative paths are relative to the params file.
    source: str = "keras-cache"
    checksums: Literal["strict", "warn"] = "strict"
    val_fraction: Fraction = 0.1
    # share of each class held out for the retune job's promotion decision: never searched on,
    # trained on or selected on by the pipeline (0: none; retune then refuses to run)
    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    train_per_class: Annotated[int, Field(ge=1)] | None = None  # None: all that remain
    test_per_class: Annotated[int, Field(ge=1)] | None = None  # None: the full test split
    seed: Annotated[int, Field(ge=0)] = 42
    preview_images: Annotated[int, Field(ge=1, le=32)] = 8
    preview_samples: Annotated[int, Field(ge=1, le=12)] = 6


class AugmentationParams(Section):
    """The policy from the course; each part off at 0 (or false)."""

    flip: bool = True  # random horizontal flip
    crop_padding: Annotated[int, Field(ge=0, le=16)] = 4  # pad by N pixels, crop back to 32x32
    rotation: Annotated[float, Field(ge=0, le=180)] = 0.0  # max degrees either way
    brightness: Probability = 0.0  # max change, fraction of the pixel range
    contrast: Probability = 0.0  # max relative change of contrast
    saturation: Probability = 0.0  # max relative change of saturation
    erasing: Probability = 0.0  # probability of erasing a random rectangle
    # with flip: each image changes side every epoch (half start mirrored) instead of a coin
    # toss per epoch, so every pair of epochs shows it both ways (airbench)
    alternate_flip: bool = False


class FamilyOverrides(Section):
    """Budget keys of the tune section, set for one family only (a key left out or null keeps
    the tune section's value)."""

    max_trials: Annotated[int, Field(ge=1)] | None = None
    budget_minutes: Annotated[float, Field(gt=0)] | None = None
    search_train_per_class: Annotated[int, Field(ge=1)] | None = None  # None: the tune value
    final_epochs: Annotated[int, Field(ge=1)] | None = None
    final_budget_minutes: Annotated[float, Field(gt=0)] | None = None


class TuneParams(Section):
    """The search of each family, and the final training of its best configuration."""

    # laptop: as set below. gpu: mixed precision (bfloat16 where the GPU has it, float16 on
    # older ones; float32 when no GPU is there) and the search on the whole training split
    # (search_train_per_class ignored). params-gpu.yaml sizes every budget for one large GPU.
    profile: Literal["laptop", "gpu"] = "laptop"
    # the Keras dtype policy of every training; auto: the profile's rule on a GPU, and on a
    # CPU a short timing of float32 against mixed_bfloat16 (bfloat16 when 1.05x faster;
    # float32 in deterministic runs). pipeline/precision.py says why
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    # folder of the search space files, <space_dir>/<family>.yaml (tune, replicate, retune)
    space_dir: str = "search_spaces"
    tuner: Literal["hyperband", "random", "bayesian"] = "hyperband"
    # prior: after the defaults, draws mix uniform ones with draws around the defaults and
    # around the best trial so far (pipeline/search/prior.py); uniform: KerasTuner's own
    sampling: Literal["prior", "uniform"] = "prior"
    max_trials: Annotated[int, Field(ge=1)] = 20  # cap on trials (Hyperband: a cap on top)
    max_epochs: Annotated[int, Field(ge=1)] = 4  # most epochs one trial trains
    hyperband_factor: Annotated[int, Field(ge=2)] = 3
    patience: Annotated[int, Field(ge=1)] = 2  # early stopping on val_loss, best weights kept
    # noise-aware selection (pipeline/search/selection.py): when a challenger beats the first
    # trial, the confirm_top best challengers at the top rung and the first trial are trained
    # again with confirm_seeds paired seeds, and a challenger wins only by more than their
    # noise. 0: off (the best single trial is taken)
    confirm_seeds: Annotated[int, Field(ge=0, le=10)] = 0
    confirm_top: Annotated[int, Field(ge=1, le=5)] = 2
    budget_minutes: Annotated[float, Field(gt=0)] = 10.0  # wall clock of one family's search
    search_train_per_class: Annotated[int, Field(ge=1)] | None = None  # subset for the search
    # The budget rule of both families: the final training runs final_epochs epochs or
    # final_budget_minutes of training, whichever ends first, with its schedule ending there.
    # Search trials are budgeted in compute, not minutes: none gets more than the space's
    # defaults at its rung (pipeline/search/hypermodel.py).
    final_epochs: Annotated[int, Field(ge=1)] = 10
    final_budget_minutes: Annotated[float, Field(gt=0)] = 8.0
    # trainings of the best configuration per family, seeds seed, seed + 1...: the tune stage
    # trains the first, the replicate stage the others; evaluate reports their spread
    final_seeds: Annotated[int, Field(ge=1, le=20)] = 1
    # true: every budget is a count (trials, epochs), never the clock, and Keras' op
    # determinism is on, so two runs with the same params give the same results (on CPU)
    deterministic: bool = False
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 3
    seed: Annotated[int, Field(ge=0)] = 1
    # auto: data parallel over 2+ GPUs of this host; on: over every device (CPU ones too);
    # off: one device
    data_parallel: Literal["auto", "on", "off"] = "auto"
    per_family: dict[FamilyName, FamilyOverrides] = {}

    @field_validator("confirm_seeds")
    @classmethod
    def _paired(cls, value: int) -> int:
        if value == 1:
            raise ValueError("should be 0 (off) or at least 2: one seed has no spread")
        return value

    def for_family(self, family: str) -> TuneParams:
        """These settings with the family's overrides applied."""
        overrides = self.per_family.get(family)
        if overrides is None:
            return self
        changes = {k: v for k, v in overrides.model_dump().items() if v is not None}
        return self.model_copy(update=changes)


class EqualTimeParams(Section):
    """The optional equal_time stage (pipeline/budget_rule.py): the FC searched and trained for
    the CNN's measured minutes with the CNN's augmentation, so that the verdict can be read
    under both budget rules. Off by default: it adds about the CNN's search and final-training
    minutes to a run."""
    run: bool = False


class EvaluateParams(Section):
    """The test-set verdict."""

    bootstrap_resamples: Annotated[int, Field(ge=100)] = 2000  # for the 95% accuracy interval
    seed: Annotated[int, Field(ge=0)] = 0
    batch_size: Annotated[int, Field(ge=1)] = 512
    # average each test image's prediction with its mirror image's (both families alike)
    flip_tta: bool = True
    # also average over the views moved N pixels down-right and up-left (0: off)
    translate_tta: Annotated[int, Field(ge=0, le=4)] = 0


class RetuneParams(Section):
    """The scheduled retuning job (``cifar-automl retune``): a fresh budgeted search per
    family, warm-started from the champion, which it replaces only on a clear, paired win."""

    families: Annotated[list[FamilyName], Field(min_length=1)] = list(FAMILY_NAMES)
    max_trials: Annotated[int, Field(ge=1)] = 8
    budget_minutes: Annotated[float, Field(gt=0)] = 5.0  # search wall clock, per family
    # None: the pipeline's final training rule for each family (tune.final_epochs and
    # final_budget_minutes with tune.per_family), so champion and challenger train alike
    final_epochs: Annotated[int, Field(ge=1)] | None = None
    final_budget_minutes: Annotated[float, Field(gt=0)] | None = None
    # Promote when holdout accuracy(challenger) - accuracy(champion) >= margin and the exact
    # McNemar p-value on the same holdout images <= alpha. (A negative margin or alpha 1
    # loosen the rule; tests use them to force a promotion.)
    margin: Annotated[float, Field(ge=-1, le=1)] = 0.005
    alpha: Probability = 0.05
    workdir: str = "retune"  # scratch: search, models and results of the current retune
    lock_file: str = "retune/retune.lock"


class LessonsParams(Section):
    """The lessons pipeline (lessons/dvc.yaml): controlled experiments, one per claim of the
    lecture, on small per-class subsets of the prepared data."""

    # training images per class (at most: a class with fewer gives all it has); None: all
    train_per_class: Annotated[int, Field(ge=3)] | None = 200
    eval_per_class: Annotated[int, Field(ge=1)] | None = 100  # validation and test, per class
    epochs: Annotated[int, Field(ge=1)] = 3  # of every run (the overfitting lessons: more)
    seeds: Annotated[int, Field(ge=1, le=10)] = 3  # the claims judged on paired seeds
    ablation_epochs: Annotated[int, Field(ge=1)] = 6  # the champion's ablation cards
    # the cards train the champion's configuration at this many base filters (None: its own
    # width); its parts are what they remove, the width only sets the cards' cost
    ablation_base_filters: Annotated[int, Field(ge=1)] | None = 8
    seed: Annotated[int, Field(ge=0)] = 0
    # a second pass on fresh seeds (confirm_seed, confirm_seed + 1...) and a fresh data
    # subset drawn with it, of every claim the first pass decided; the report marks a claim
    # whose verdicts differ as unstable. None: one pass
    confirm_seed: Annotated[int, Field(ge=0)] | None = 100
    # None: every claim, in order; else names from pipeline/lessons/__init__.py (checked when
    # the lessons stage starts, so that the default stages do not depend on that list)
    claims: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("confirm_seed")
    @classmethod
    def _fresh(cls, value: int | None, info) -> int | None:
        seed, seeds = info.data.get("seed", 0), info.data.get("seeds", 1)
        if value is not None and abs(value - seed) < seeds:
            raise ValueError(f"should give seeds the first pass does not use ({seed} to "
                             f"{seed + seeds - 1}): at least {seed + seeds}")
        return value


class TrackingParams(Section):
    """Where every command that touches MLflow (tune, publish, retune, history, ui) logs."""

    # None: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db; "off": no MLflow at all
    uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    # seconds between samples of CPU, memory, disk and network use, logged on each search run
    # as system/* metrics (MLflow's monitor; needs psutil: the system-metrics extra); 0: off
    system_metrics_s: Annotated[float, Field(ge=0)] = 0.0
    # against a tracking server (http/https URIs): MLflow's HTTP client retries a failed call
    # this many times and waits at most http_timeout_s for an answer, so a server that is down
    # costs seconds; MLflow's own MLFLOW_HTTP_REQUEST_* variables, when set, win
    http_retries: Annotated[int, Field(ge=0, le=10)] = 2
    http_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    # also write TensorBoard logs of every trial under tuning/<family>/<project>/tensorboard
    # (KerasTuner adds its HParams dashboard): tensorboard --logdir tuning
    tensorboard: bool = False


class Params(Section):
    prepare: PrepareParams = PrepareParams()
    augmentation: AugmentationParams = AugmentationParams()
    tune: TuneParams = TuneParams()
    equal_time: EqualTimeParams = EqualTimeParams()
    evaluate: EvaluateParams = EvaluateParams()
    retune: RetuneParams = RetuneParams()
    lessons: LessonsParams = LessonsParams()
    tracking: TrackingParams = TrackingParams()


# keys that moved: an old params file gets told where, not just "unknown key"
MOVED_KEYS = {"tune.tracking_uri": "tracking.uri", "tune.experiment": "tracking.experiment"}
# keys that are gone, and why
REMOVED_KEYS = {"tune.objective": "the search always maximises validation accuracy"}


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load, validate and cross-check a params file; raise ConfigError on the first fault."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    _check_prepare(path, params.prepare)
    return params


def resolve_source(params_file: str | Path, source: str) -> str | Path:
    """A source keyword as is, or a path made absolute against the params file's folder."""
    if source in SOURCE_KEYWORDS:
        return source
    candidate = Path(source).expanduser()
    if not candidate.is_absolute():  # beside the params file (of the project, in a DVC copy)
        candidate = (home(Path(params_file).parent) / candidate).resolve()
    return candidate


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, None, MISSING, "file not found") from None
    except OSError as exc:
        raise ConfigError(path, None, MISSING, f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, None, MISSING, f"not valid YAML ({where}{problem})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, None, MISSING, "must be a mapping of sections")
    return raw


def _first_error(path: Path, exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    key_parts, parent = _key_path(error["loc"])
    key = ".".join(key_parts)
    if error["type"] == "extra_forbidden" and key in MOVED_KEYS:
        return ConfigError(path, key, MISSING, f"moved: set {MOVED_KEYS[key]} instead")
    if error["type"] == "extra_forbidden" and key in REMOVED_KEYS:
        return ConfigError(path, key, MISSING, f"no longer a setting ({REMOVED_KEYS[key]}): "
                                               "delete it")
    if error["type"] == "extra_forbidden":
        known = ", ".join(parent.model_fields) if parent else ""
        return ConfigError(path, key, MISSING, f"unknown key (known keys: {known})")
    message = error["msg"]
    if message.startswith("Input should"):
        message = "should" + message[len("Input should") :]
    message = message.removeprefix("Value error, ")  # a validator's own words
    if error["type"] in ("model_type", "dict_type"):
        message = "should be a mapping of keys to values"
    return ConfigError(path, key, error.get("input", MISSING), message)


def _key_path(loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """The params key an error is about, and the section model that holds it.

    pydantic appends union member tags (``int``, ``none``) to locations: those stop the walk.
    """
    parts: list[str] = []
    model: type[BaseModel] | None = Params
    parent = model
    loc = list(loc)
    while loc:
        part = loc.pop(0)
        if model is None or not isinstance(part, str) or part == "[key]":
            break
        parts.append(part)
        parent = model
        if part not in model.model_fields:
            break  # an unknown key
        annotation = model.model_fields[part].annotation
        if get_origin(annotation) is dict and loc:  # a mapping: its key, then its value model
            parts.append(str(loc.pop(0)))
            annotation = get_args(annotation)[1]
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_section else None
    return parts, parent


def _check_prepare(path: Path, prepare: PrepareParams) -> None:
    """Checks that need more than one key, or the file system."""
    spec = DATASETS[prepare.dataset]
    if prepare.label_mode not in spec.label_keys:
        raise ConfigError(
            path, "prepare.label_mode", prepare.label_mode,
            f"{spec.title} has only {', '.join(spec.label_keys)} labels",
        )
    per_class = spec.train_per_class[prepare.label_mode]
    if prepare.val_fraction + prepare.holdout_fraction >= 1:
        raise ConfigError(
            path, "prepare.holdout_fraction", prepare.holdout_fraction,
            f"with val_fraction {prepare.val_fraction} it leaves no training images",
        )
    train_left = (per_class - round(per_class * prepare.val_fraction)
                  - round(per_class * prepare.holdout_fraction))
    if prepare.train_per_class is not None and prepare.train_per_class > train_left:
        raise ConfigError(
            path, "prepare.train_per_class", prepare.train_per_class,
            f"larger than the data: {spec.title} has {per_class} training images per class, "
            f"{train_left} after validation and holdout fractions of {prepare.val_fraction} and "
            f"{prepare.holdout_fraction}",
        )
    test_available = spec.test_per_class[prepare.label_mode]
    if prepare.test_per_class is not None and prepare.test_per_class > test_available:
        raise ConfigError(
            path, "prepare.test_per_class", prepare.test_per_class,
            f"larger than the data: {spec.title} has {test_available} test images per class",
        )
    source = resolve_source(path, prepare.source)
    if isinstance(source, Path) and not source.exists():
        raise ConfigError(
            path, "prepare.source", prepare.source,
            f"not found ({source}); give a {spec.folder} folder or {spec.archive}, "
            f"or one of: {', '.join(SOURCE_KEYWORDS)}",
        )
