"""The two budget rules on real CIFAR-10 subsets: the equal_time stage gives the FC the CNN's
measured minutes and augmentation, evaluate records how even each comparison was."""

from __future__ import annotations

import json

import pytest

from pipeline.budget_rule import footing, training_facts
from pipeline.config import load_params
from pipeline.errors import ConfigError
from tests.conftest import REAL_CIFAR10, TINY_CNN_SPACE, TINY_FC_SPACE, write_params

# the CNN trains with a 2-pixel crop and no flip; the FC's own space says 0 and flip
CNN_SPACE = TINY_CNN_SPACE + "  aug_crop: {type: fixed, value: 2}\n" \
    "  aug_flip: {type: fixed, value: false}\n"
FC_SPACE = TINY_FC_SPACE + "  aug_crop: {type: choice, values: [0], default: 0}\n"


def _setup(tmp_path, run_equal_time: bool, deterministic: bool = False):
    tune = {"tuner": "random", "max_trials": 2, "max_epochs": 1, "final_epochs": 2,
            "budget_minutes": 2, "final_budget_minutes": 0.5, "deterministic": deterministic,
            "per_family": {"cnn": {}, "fc": {"final_epochs": 1}}}
    params_file = write_params(
        tmp_path / "params.yaml", prepare={"source": str(REAL_CIFAR10)}, tune=tune,
        equal_time={"run": run_equal_time},
        tracking={"uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    (tmp_path / "cnn.yaml").write_text(CNN_SPACE)
    (tmp_path / "fc.yaml").write_text(FC_SPACE)
    return params_file


def _tune(tmp_path, params_file, family, prepared):
    from pipeline.tune import TuneFolders, run_tune

    return run_tune(load_params(params_file), family, tmp_path / f"{family}.yaml", prepared,
                    TuneFolders(tmp_path / "tuning" / family, tmp_path / "models",
                                tmp_path / "results"))


def test_the_equal_time_fc_trains_for_the_cnns_minutes_with_its_augmentation(
        tmp_path, tiny_prepared, monkeypatch):
    from pipeline.equal_time import run_equal_time
    from pipeline.evaluate import run_evaluate

    monkeypatch.chdir(tmp_path)
    params_file = _setup(tmp_path, run_equal_time=True)
    cnn = _tune(tmp_path, params_file, "cnn", tiny_prepared)
    fc = _tune(tmp_path, params_file, "fc", tiny_prepared)
    assert cnn["budget_rule"] == fc["budget_rule"] == "equal_epochs"
    assert cnn["search_seconds"] > 0

    status = run_equal_time(load_params(params_file), params_file, tmp_path / "fc.yaml",
                            tiny_prepared, tmp_path / "results" / "cnn",
                            tmp_path / "tuning" / "fc_equal_time", tmp_path / "equal_time")
    assert status["ran"] is True
    best = json.loads((tmp_path / "equal_time" / "results" / "fc" /
                       "best_hparams.json").read_text())
    assert (tmp_path / "equal_time" / "models" / "fc" / "best.keras").is_file()
    cnn_seconds = cnn["final"]["trained_seconds"]
    assert best["budget_rule"] == "equal_time"
    assert best["final"]["budget_minutes"] == pytest.approx(cnn_seconds / 60)
    assert status["cnn_search_minutes"] == pytest.approx(cnn["search_seconds"] / 60, abs=0.01)
    # by the clock: the FC's epochs ran out only when the CNN's minutes did
    assert best["final"]["ended_by"] == "time"
    assert best["final"]["trained_seconds"] >= 0.9 * cnn_seconds
    assert best["final"]["epochs_run"] > fc["final"]["epochs_run"]
    # the CNN's augmentation, not the FC space's own
    assert best["hyperparameters"]["aug_crop"] == 2 and fc["hyperparameters"]["aug_crop"] == 0
    assert best["hyperparameters"]["aug_flip"] is False

    metrics = run_evaluate(load_params(params_file), tiny_prepared, tmp_path / "models",
                           tmp_path / "results", tmp_path / "metrics.json",
                           equal_time_dir=tmp_path / "equal_time")
    even = metrics["comparison_equal_time"]
    assert even["budget_rule"] == "equal_time" and even["same_augmentation"] is True
    assert metrics["fc_equal_time"]["augmentation"] == "pad-crop 2 px"
    uneven = metrics["comparison"]
    assert uneven["budget_rule"] == "equal_epochs" and uneven["same_augmentation"] is False
    # the clock's readings go to timings.json (metrics.json: the same for the same models)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert "fc_time_share" not in even and timings["comparison_equal_time"]["fc_time_share"] >= 0.9
    assert timings["comparison"]["architecture_claim"] is False
    assert timings["fc_equal_time"]["train_minutes"] == pytest.approx(
        best["final"]["trained_seconds"] / 60, abs=0.01)


def test_off_the_stage_writes_its_status_only_and_evaluate_ignores_it(tmp_path, tiny_prepared):
    from pipeline.budget_rule import equal_time_model
    from pipeline.equal_time import run_equal_time

    params_file = _setup(tmp_path, run_equal_time=False)
    status = run_equal_time(load_params(params_file), params_file, tmp_path / "fc.yaml",
                            tiny_prepared, tmp_path / "no-cnn-needed",
                            tmp_path / "tuning" / "fc_equal_time", tmp_path / "equal_time")
    assert status == {"budget_rule": "equal_time", "ran": False}
    assert sorted(p.name for p in (tmp_path / "equal_time").iterdir()) == ["status.json"]
    assert (tmp_path / "tuning" / "fc_equal_time").is_dir()  # a DVC output even when off
    assert equal_time_model(tmp_path / "equal_time") is None


def test_equal_time_refuses_a_run_that_counts_epochs_only(tmp_path, tiny_prepared):
    from pipeline.equal_time import run_equal_time

    params_file = _setup(tmp_path, run_equal_time=True, deterministic=True)
    (tmp_path / "equal_time").mkdir()
    (tmp_path / "equal_time" / "status.json").write_text('{"ran": false}')
    with pytest.raises(ConfigError, match=r"equal_time.run = True: needs the clock"):
        run_equal_time(load_params(params_file), params_file, tmp_path / "fc.yaml",
                       tiny_prepared, tmp_path / "results" / "cnn",
                       tmp_path / "tuning" / "fc_equal_time", tmp_path / "equal_time")
    # the earlier output is untouched
    assert (tmp_path / "equal_time" / "status.json").read_text() == '{"ran": false}'


def _best(minutes: float, augmentation: dict) -> dict:
    return {"hyperparameters": {"batch_size": 100, **augmentation},
            "final": {"trained_seconds": 60 * minutes, "steps": 10, "epochs_run": 2}}


def test_footing_claims_the_architecture_only_with_equal_time_and_augmentation():
    crop = {"aug_flip": True, "aug_crop": 4}
    cnn = training_facts(_best(14, crop))
    assert cnn["images_seen"] == 1000 and cnn["train_minutes"] == 14
    assert footing(cnn, training_facts(_best(14, crop)))["architecture_claim"] is True
    # a run ends on a whole step, a little before its cap: 95% counts as equal
    assert footing(cnn, training_facts(_best(13.4, crop)))["architecture_claim"] is True
    short = footing(cnn, training_facts(_best(3.5, crop)))
    assert short["architecture_claim"] is False and short["fc_time_share"] == 0.25
    other = footing(cnn, training_facts(_best(20, {"aug_flip": True, "aug_crop": 0})))
    assert other["architecture_claim"] is False and other["same_augmentation"] is False
    # seconds, not rounded minutes: a tiny run's share is not zero
    quick = footing(training_facts(_best(0.3 / 60, crop)), training_facts(_best(0.6 / 60, crop)))
    assert quick["fc_time_share"] == 2.0 and quick["architecture_claim"] is True
