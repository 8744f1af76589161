"""Search-space files: validation errors name the file and key; conditions reach KerasTuner."""

import keras_tuner as kt
import pytest

from pipeline.errors import ConfigError
from pipeline.search.hypermodel import known_hyperparameters
from pipeline.spaces import load_space
from tests.conftest import REPO, write_params


def write(tmp_path, body: str):
    path = tmp_path / "space.yaml"
    path.write_text("family: cnn\nhyperparameters:\n" + body)
    return path


@pytest.mark.parametrize(("family", "rate", "decay"), [("cnn", 0.2, 5e-4), ("fc", 0.005, 0.05)])
def test_shipped_spaces_search_units_and_default_to_the_recipe(family, rate, decay):
    import keras_tuner as kt

    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel

    space = load_space(REPO / "search_spaces" / f"{family}.yaml", family=family,
                       known=known_hyperparameters(family))
    assert {"lr_multiplier", "decay_per_step", "optimizer"} <= set(space.names())
    hypermodel = FamilyHyperModel(family, space, {"num_classes": 10}, AugmentationParams(),
                                  n_train=100)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    cfg = hypermodel.config(hp)  # the defaults: the first trial
    assert cfg["learning_rate"] == pytest.approx(rate)
    assert cfg["weight_decay"] == pytest.approx(decay)
    # adam is Adam with L2 in the loss; adamw decays beside the gradient: two optimizers
    hp.values.update(optimizer="adam", lr_multiplier=2.0)
    cfg = hypermodel.config(hp)
    assert cfg["learning_rate"] == pytest.approx(0.01)
    assert cfg["weight_decay"] == pytest.approx(hp.values["decay_per_step"] / 0.01)


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("  dropout: {type: gaussian, min: 0, max: 1}\n", "hyperparameters.dropout.type",
         "unknown type"),
        ("  optimizer: {type: choice, values: []}\n", "hyperparameters.optimizer.values",
         "non-empty list"),
        ("  dropout: {type: float, min: 0.5, max: 0.1}\n", "hyperparameters.dropout.min",
         "greater than max"),
        ("  momentum: {type: float, min: 0.8, max: 0.9, when: {optimiser: [sgd]}}\n",
         "hyperparameters.momentum.when", "unknown parent"),
        ("  learning_rate: {type: float, min: 0, max: 0.1, sampling: log}\n",
         "hyperparameters.learning_rate.min", "log sampling needs min > 0"),
        ("  stages: {type: int, min: 1, max: 4, defualt: 2}\n", "hyperparameters.stages.defualt",
         "unknown key"),
        ("  learning_rate: {type: float, min: 1e-4, max: 0.1}\n",
         "hyperparameters.learning_rate.min", "should be a number"),
        ("  optimizer: {type: choice, values: [sgd, adam]}\n"
         "  momentum: {type: float, min: 0.8, max: 0.9, when: {optimizer: [nadam]}}\n",
         "hyperparameters.momentum.when", "not a value optimizer can take"),
        ("  dropuot: {type: float, min: 0.0, max: 0.5}\n", "hyperparameters.dropuot",
         "unknown hyperparameter"),
        ("  learning_rate: {type: fixed, value: 0.1}\n"
         "  lr_multiplier: {type: float, min: 0.5, max: 2.0}\n",
         "hyperparameters.lr_multiplier", "give learning_rate or lr_multiplier, not both"),
    ],
)
def test_bad_space_entries(tmp_path, body, key, problem):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_space(path, known=known_hyperparameters("cnn"))
    message = str(info.value)
    assert message.startswith(str(path)) and f": {key}" in message and problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("body", "value"),
    [
        ("  optimizer: {type: choice, values: [nesterov, nadamw]}\n", "nadamw"),
        ("  schedule: {type: fixed, value: cosine_warmup}\n", "cosine_warmup"),
        ("  activation: {type: choice, values: [relu, gleu], default: relu}\n", "gleu"),
        ("  batch_norm: {type: boolean}\n"
         "  conv_init: {type: fixed, value: he_nromal, when: {batch_norm: [false]}}\n",
         "he_nromal"),
        ("  head: {type: choice, values: [global_max, global_mean]}\n", "global_mean"),
        ("  block_stages: {type: fixed, value: both}\n", "both"),
    ],
)
def test_a_misspelt_named_value_is_refused_at_load(tmp_path, body, value):
    """Each of these used to load: the trials drawing it failed when Keras built them (the head
    silently became global_max). Refused with the file, the key and the value."""
    from pipeline.search.hypermodel import load_family_space

    path = write(tmp_path, body)
    load_space(path, known=known_hyperparameters("cnn"))  # well-formed: only the value is wrong
    with pytest.raises(ConfigError) as info:
        load_family_space(path, "cnn")
    name = body.strip().splitlines()[-1].split(":")[0].strip()
    assert str(info.value).startswith(f"{path}: hyperparameters.{name} = {value!r}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("family", ["cnn", "fc"])
def test_the_shipped_spaces_name_only_values_their_builders_take(family):
    from pipeline.search.hypermodel import NAMED_VALUES, load_family_space

    space = load_family_space(REPO / "search_spaces" / f"{family}.yaml", family)
    assert {"optimizer", "schedule", "activation"} <= set(space.names()) & set(NAMED_VALUES)


def test_conditions_and_fixed_values_reach_keras_tuner(tmp_path):
    path = write(tmp_path, (
        "  optimizer: {type: choice, values: [nesterov, adam], default: adam}\n"
        "  momentum: {type: float, min: 0.8, max: 0.95, default: 0.9,"
        " when: {optimizer: [nesterov]}}\n"
        "  batch_size: {type: fixed, value: 64}\n"
        "  aug_flip: {type: boolean, default: true}\n"
    ))
    space = load_space(path)
    hp = kt.HyperParameters()
    values = space.declare(hp)
    assert values == {"optimizer": "adam", "batch_size": 64, "aug_flip": True}  # momentum off
    trial_hp = kt.HyperParameters()
    trial_hp.values["optimizer"] = "nesterov"  # as the oracle would set it for a trial
    assert space.declare(trial_hp)["momentum"] == 0.9
    assert "only when optimizer in ['nesterov']" in space.summary()


def test_show_space_command(tmp_path, real_cifar10):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipeline", "show-space",
                             "search_spaces/cnn.yaml"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "lr_multiplier" in result.stdout and "(log)" in result.stdout
    # every value a trial uses is visible: the searched ones and the fixed defaults; a value
    # drawn through its unit is neither
    searched, fixed = result.stdout.split("fixed for every trial")
    assert "  ema_momentum: 0.0" in fixed and "  aug_rotation: 0.0" in fixed
    assert "\n  lr_multiplier:" not in fixed and "lr_multiplier" in searched
    assert "\n  bn_bias_lr_multiplier: 1.0" in fixed  # a recipe switch, off
    assert "learning_rate" not in result.stdout and "weight_decay" not in result.stdout
    policy = write_params(tmp_path / "params.yaml", prepare={"source": str(tmp_path)},
                          augmentation={"rotation": 5})
    result = subprocess.run([sys.executable, "-m", "pipeline", "show-space", "--params",
                             str(policy), "search_spaces/fc.yaml"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "  aug_rotation: 5.0" in result.stdout.split("fixed")[1]
    bad = write(tmp_path, "  stages: {type: int, min: 3, max: 1}\n")
    result = subprocess.run([sys.executable, "-m", "pipeline", "show-space", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "hyperparameters.stages.min" in result.stderr
    bad = write(tmp_path, "  activation: {type: choice, values: [relu, gleu]}\n")
    result = subprocess.run([sys.executable, "-m", "pipeline", "show-space", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "hyperparameters.activation = 'gleu'" in result.stderr


def test_show_space_on_malformed_yaml_is_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("family: cnn\nhyperparameters: {stages: [1, 2\n")
    result = subprocess.run([sys.executable, "-m", "pipeline", "show-space", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_fixed_value_replaces_a_searched_one_and_adds_a_missing_one(tmp_path):
    space_file = tmp_path / "fc.yaml"
    space_file.write_text("family: fc\nhyperparameters:\n"
                          "  aug_crop: {type: choice, values: [0, 4], default: 0}\n"
                          "  dropout: {type: float, min: 0.0, max: 0.5, default: 0.1}\n")
    space = load_space(space_file, "fc").with_fixed({"aug_crop": 4, "aug_flip": False})
    hp = kt.HyperParameters()
    assert space.declare(hp) == {"aug_crop": 4, "dropout": 0.1, "aug_flip": False}
    assert [e.type for e in space.entries] == ["fixed", "float", "fixed"]


def test_space_defaults_say_how_they_were_chosen_and_never_by_the_test_split():
    """The test split chooses nothing: a shipped space's comments (where its defaults' origin
    is written) must not cite a test score; the FC's defaults name the split that decided."""
    import re

    for path in sorted((REPO / "search_spaces").rglob("*.yaml")):
        comments = "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines()
                             if "#" in line)
        assert not re.search(r"\btest\b", comments, re.IGNORECASE), path
    fc = (REPO / "search_spaces" / "fc.yaml").read_text()
    assert "validation" in fc.split("hyperparameters:")[0]


def test_cnn_draws_without_batch_norm_get_he_init_and_a_quarter_of_sgds_rate():
    """The no-batch-norm half of the CNN space trains in a trial (bench/README.md,
    "Informative trials") only with both: a variance-keeping init and SGD's lower reference."""
    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel

    space = load_space(REPO / "search_spaces" / "cnn.yaml", family="cnn",
                       known=known_hyperparameters("cnn"))
    hypermodel = FamilyHyperModel("cnn", space, {"num_classes": 10}, AugmentationParams(),
                                  n_train=100)
    configs = {}
    for batch_norm, optimizer in [(True, "nesterov"), (False, "nesterov"), (False, "adam")]:
        hp = kt.HyperParameters()
        hp.values.update(batch_norm=batch_norm, optimizer=optimizer, lr_multiplier=2.0)
        configs[batch_norm, optimizer] = hypermodel.config(hp)
    assert configs[True, "nesterov"]["learning_rate"] == pytest.approx(0.4)
    assert configs[True, "nesterov"]["conv_init"] == "glorot_uniform"  # the recipe unchanged
    assert configs[False, "nesterov"]["learning_rate"] == pytest.approx(0.1)
    assert configs[False, "nesterov"]["conv_init"] == "he_normal"
    assert configs[False, "adam"]["learning_rate"] == pytest.approx(0.01)  # Adam's unchanged
    hp = kt.HyperParameters()
    hp.values.update(batch_norm=True)
    assert "conv_init" not in hypermodel.logged_config(hp)  # not what a batch-norm trial used
