"""Every name this project writes into MLflow, in one place: the code that writes a run and the
code that later finds it (publish, retune, history, tests) read the same constants."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = Path("mlruns/artifacts")
DEFAULT_EXPERIMENT = "cifar-automl"
TRACKING_OFF = "off"  # tracking.uri value that switches MLflow off

# --- tags of the experiment -----------------------------------------------------------------
# MLflow 3's own: which view the UI opens (runs and models, not the GenAI traces view)
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"

# --- tags of runs ---------------------------------------------------------------------------
PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: the UI nests a child run under this run id
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own: the UI's source version column
SOURCE_NAME = "mlflow.source.name"  # MLflow's own: the UI's Source column
SPOOL_KEY = "spool_key"  # of a run created from the spool: its local key (a replay finds it)
NOTE = "mlflow.note.content"  # MLflow's own: the run's description (markdown)
DATASET_CONTEXT = "mlflow.data.context"  # MLflow's own: training, validation...
BEST_TRIAL_RUN = "best_trial_run"  # of a search run: the run id of its best trial
ROLE = "role"  # what a top-level run is: one of the ROLE_* values
ROLE_SEARCH, ROLE_EVALUATION, ROLE_RETUNE = "search", "evaluation", "retune"
ROLE_LESSON = "lesson"  # a claim's run, or one setting of it, in the lessons' experiment
VERDICT = "verdict"  # of a lesson's run: supported, not supported, inconclusive
FAMILY = "family"
SEARCH_KEY = "search_key"  # content hash of a search: a rerun with the same key resumes it
RETUNE_ID = "retune_id"
BUDGET_RULE = "budget_rule"  # of the equal_time stage's search run: equal_time
TRIAL_ID = "trial_id"
DATASET = "dataset"  # cifar10 | cifar100, of search, trial and evaluation runs
CONFIG_DIGEST = "config_digest"  # of a trial run: its configuration's identity across searches
# of a trial run, what a retune's oracle reads back (search/oracles.py, ``history``): its
# searched values as typed JSON, its rung's epochs, and what else its score holds for (the
# training images, how many the search trained on, the augmentation, the cost basis:
# tune.search_fidelity)
SEARCHED_VALUES = "searched_values"
RUNG_EPOCHS = "rung_epochs"
FIDELITY = "fidelity"
TUNER_ID = "tuner_id"  # which process ran a trial (chief/worker in a distributed search)
TRIAL_STATUS = "status"  # KerasTuner's status of a trial (COMPLETED, FAILED, INVALID)
TRIAL_ERROR = "error"
STOPPED_BY_BUDGET = "stopped_by_budget"
# MLflow run status of a trial, from KerasTuner's trial status
STATUS_OF_TRIAL = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "INVALID": "FAILED"}


def search_run(family: str) -> str:
    return f"{family}-search"


def trial_run(trial_id: str) -> str:
    return f"trial-{trial_id}"


EVALUATION_RUN = "evaluation"


def lessons_experiment(experiment: str) -> str:
    """The lessons' own MLflow experiment, beside the pipeline's."""
    return f"{experiment}-lessons"


def retune_run(retune_id: str) -> str:
    return f"retune-{retune_id}"


def family_search_tag(family: str) -> str:
    """Tag of the evaluation run: the id of that family's search run."""
    return f"{family}_search_run"


def family_decision_tag(family: str) -> str:
    """Tag of a retune run: created, promoted or kept."""
    return f"{family}_decision"


# --- filters --------------------------------------------------------------------------------
RUNNING = "attributes.status = 'RUNNING'"


def tag_is(key: str, value: str) -> str:
    return f"tags.{key} = '{value}'"


def tag_set(key: str) -> str:
    return f"tags.{key} LIKE '%'"


# --- the Model Registry ---------------------------------------------------------------------
CHAMPION, PREVIOUS = "champion", "previous"  # aliases
# tags of a model version
VERSION_TEST_ACCURACY = "test_accuracy"  # what the registered (single-view) model scores
VERSION_HOLDOUT_ACCURACY = "holdout_accuracy"  # a retune's challenger, on the holdout split
VERSION_HYPERPARAMETERS = "hyperparameters"  # JSON: a retune's warm start
VERSION_REGISTERED_BY = "registered_by"  # publish | retune
VERSION_RUN = "run"  # the run the model was logged on
VERSION_WEIGHTS_DIGEST = "weights_digest"  # of the trained model it was made from


def registered_model(dataset: str, family: str) -> str:
    return f"{dataset}-{family}"


def model_artifact(family: str) -> str:
    """The artifact folder a family's registered model is logged under."""
    return f"{family}-model"
