"""Where the project lives, also from inside a DVC experiment's temporary copy.

``dvc exp run --temp`` and queued experiments (``dvc exp run --queue``, ``dvc queue start``) run
in a copy of the repository under ``<project>/.dvc/tmp/exps/`` (DVC 3.67:
``exps/standalone/tmpXXXX/``), which DVC deletes afterwards. The project's MLflow store, its
artifacts and data given by a relative path are the original ones: ``home`` maps a path inside
such a copy to the same path in the project, so an experiment's runs land in the store the
user browses.
"""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = (".dvc", "tmp", "exps")  # DVC's folder of temporary experiment copies


def home(path: str | Path) -> Path:
    """``path`` (relative to the working folder) as an absolute path in the project itself."""
    resolved = Path(path).resolve()
    parts = resolved.parts
    for i in range(len(parts) - len(EXPERIMENTS)):
        if parts[i:i + len(EXPERIMENTS)] == EXPERIMENTS:
            return Path(*parts[:i]).joinpath(*parts[_copy_root(parts, i) + 1:])
    return resolved


def _copy_root(parts: tuple[str, ...], exps_at: int) -> int:
    """Index in ``parts`` of the experiment copy's root: the first folder below exps that
    holds a dvc.yaml (the copy is a checkout of the repository)."""
    first = exps_at + len(EXPERIMENTS)
    for end in range(first, len(parts)):
        if (Path(*parts[:end + 1]) / "dvc.yaml").is_file():
            return end
    return first


def in_experiment_copy(path: str | Path = ".") -> bool:
    return home(path) != Path(path).resolve()
