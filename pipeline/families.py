"""The model families the pipeline compares, one record each. Every stage, the CLI and the
params schema take the family list and a family's parts from here.

Importing this module imports no Keras: a family's builder and defaults load on first use, so
the CLI's ``--help`` and the report stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from pipeline.tracking import names

SPACE_DIR = Path("search_spaces")


@dataclass(frozen=True)
class Family:
    name: str  # cnn: file names, DVC stage tune@cnn, params keys
    label: str  # what reports call it
    # the model module: BUILDER(cfg, num_classes, meta, policy, seed) and DEFAULTS, where meta
    # is the prepared data's meta.json (its mean and std normalise the input)
    module: str
    builder_name: str
    defaults_name: str

    @property
    def builder(self):
        """``build(cfg, num_classes, meta, policy, seed=None)`` -> an uncompiled model."""
        return getattr(import_module(self.module), self.builder_name)

    @property
    def defaults(self) -> dict:
        """The family's own hyperparameters and their default values."""
        return dict(getattr(import_module(self.module), self.defaults_name))

    def space_file(self, folder: Path = SPACE_DIR) -> Path:
        return Path(folder) / f"{self.name}.yaml"

    def registered_model(self, dataset: str) -> str:
        """Its name in the MLflow Model Registry, for example ``cifar10-cnn``."""
        return names.registered_model(dataset, self.name)


FAMILIES = {family.name: family for family in (
    Family("cnn", "CNN", "pipeline.models.cnn", "build_cnn", "CNN_DEFAULTS"),
    Family("fc", "Fully connected", "pipeline.models.fc", "build_fc", "FC_DEFAULTS"),
)}
FAMILY_NAMES = tuple(FAMILIES)  # in report order: the CNN first, its baseline second
