"""params.yaml validation: every fault is one line naming the file, the key and the value."""

import pytest

from pipeline.config import load_params
from pipeline.errors import ConfigError
from tests.conftest import write_params


def _error(tmp_path, **sections) -> str:
    path = write_params(tmp_path / "params.yaml", **sections)
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_defaults_validate(tmp_path, tiny_cifar10):
    path = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_cifar10)})
    params = load_params(path)
    assert params.prepare.val_fraction == 0.1
    assert params.augmentation.flip is True


def test_repo_params_file_is_valid(real_cifar10):
    from tests.conftest import REPO

    params = load_params(REPO / "params.yaml")
    assert params.prepare.dataset == "cifar10"


@pytest.mark.parametrize(
    ("prepare", "key", "shown_value", "problem"),
    [
        ({"val_fraction": 1.5}, "prepare.val_fraction", "1.5", "less than 1"),
        ({"val_fraction": 0}, "prepare.val_fraction", "0", "greater than 0"),
        ({"vall_fraction": 0.2}, "prepare.vall_fraction", None, "unknown key"),
        ({"seed": "forty-two"}, "prepare.seed", "'forty-two'", "valid integer"),
        ({"seed": 1.5}, "prepare.seed", "1.5", "valid integer"),
        ({"train_per_class": 4501}, "prepare.train_per_class", "4501", "larger than the data"),
        ({"test_per_class": 1001}, "prepare.test_per_class", "1001", "larger than the data"),
        ({"dataset": "mnist"}, "prepare.dataset", "'mnist'", "'cifar10' or 'cifar100'"),
        ({"checksums": "maybe"}, "prepare.checksums", "'maybe'", "'strict' or 'warn'"),
        ({"dataset": "cifar100", "train_per_class": 451}, "prepare.train_per_class", "451",
         "500 training images per class"),
        ({"label_mode": "coarse"}, "prepare.label_mode", "'coarse'", "only fine labels"),
    ],
)
def test_bad_prepare_values(tmp_path, tiny_cifar10, prepare, key, shown_value, problem):
    message = _error(tmp_path, prepare={"source": str(tiny_cifar10), **prepare})
    assert f": {key}" in message
    if shown_value is not None:
        assert f"= {shown_value}" in message
    assert problem in message


def test_missing_source_names_it(tmp_path):
    message = _error(tmp_path, prepare={"source": "no/such/folder"})
    assert "prepare.source = 'no/such/folder'" in message
    assert "not found" in message and "cifar-10-batches-py" in message


def test_relative_source_is_relative_to_params_file(tmp_path, tiny_cifar10):
    path = write_params(tmp_path / "params.yaml", prepare={"source": "src/cifar-10-batches-py"})
    assert load_params(path).prepare.source == "src/cifar-10-batches-py"


def test_wrong_type_in_augmentation(tmp_path, tiny_cifar10):
    message = _error(tmp_path, prepare={"source": str(tiny_cifar10)},
                     augmentation={"flip": "yes please"})
    assert "augmentation.flip = 'yes please'" in message


def test_unknown_section(tmp_path, tiny_cifar10):
    message = _error(tmp_path, prepare={"source": str(tiny_cifar10)}, tunning={})
    assert ": tunning: unknown key" in message


def test_section_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare: 3\n")
    with pytest.raises(ConfigError, match="prepare = 3: should be a mapping"):
        load_params(path)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  seed: [1\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML \(line \d+"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_per_family_overrides(tmp_path, tiny_cifar10):
    path = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_cifar10)},
                        tune={"budget_minutes": 8, "per_family": {"fc": {"budget_minutes": 2}}})
    tune = load_params(path).tune
    assert tune.for_family("fc").budget_minutes == 2
    assert tune.for_family("cnn").budget_minutes == 8
    path = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_cifar10)},
                        tune={"per_family": {"mlp": {"budget_minutes": 2}}})
    with pytest.raises(ConfigError, match="tune.per_family.mlp"):
        load_params(path)


def test_a_moved_key_says_where_it_went(tmp_path, tiny_cifar10):
    message = _error(tmp_path, prepare={"source": str(tiny_cifar10)},
                     tune={"tracking_uri": "sqlite:///x.db"})
    assert "tune.tracking_uri: moved: set tracking.uri instead" in message


def test_the_family_list_comes_from_the_family_records(tmp_path, tiny_cifar10):
    from pipeline.families import FAMILY_NAMES

    assert load_params(write_params(tmp_path / "p.yaml", prepare={"source": str(tiny_cifar10)})
                       ).retune.families == list(FAMILY_NAMES)
    message = _error(tmp_path, prepare={"source": str(tiny_cifar10)},
                     retune={"families": ["cnn", "rnn"]})
    assert "retune.families" in message and "'rnn'" in message


def test_paths_inside_a_dvc_temporary_experiment_resolve_to_the_project(tmp_path, monkeypatch):
    """`dvc exp run --temp` runs in <project>/.dvc/tmp/exps/<tmp>/: the project's store and
    relative data paths are the original ones, not the copy's."""
    from pipeline.config import resolve_source
    from pipeline.tracking.store import default_artifact_root, resolve_uri

    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpk2x9"  # as DVC 3.67 does
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(copy)
    assert resolve_uri("sqlite:///mlruns/mlflow.db") == \
        f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    assert default_artifact_root() == project / "mlruns" / "artifacts"
    assert resolve_source(copy / "params.yaml", "../shared/data") == tmp_path / "shared" / "data"
    monkeypatch.chdir(project)  # the project itself: relative as configured
    assert resolve_uri("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"
