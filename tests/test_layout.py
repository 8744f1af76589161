"""House rules a reader relies on, checked on the source: the family list and the MLflow names
each have one home, and docs/architecture.md names exactly the modules that exist."""

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "pipeline"
NAMES_MODULE = PACKAGE / "tracking" / "names.py"
FAMILIES_MODULE = PACKAGE / "families.py"


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _string_literals(path):
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_mlflow_names_are_spelled_only_in_the_names_module():
    spelled_elsewhere = {}
    for name in ("mlflow.parentRunId", "search_key", "registered_by", "previous"):
        assert name in _string_literals(NAMES_MODULE)
        for path in _sources():
            if path != NAMES_MODULE and name in _string_literals(path):
                spelled_elsewhere.setdefault(name, []).append(str(path.relative_to(REPO)))
    # run filters ("tags.role = 'retune'") too: the code that finds a run uses the same names
    for path in _sources():
        if path != NAMES_MODULE and any("tags." in s for s in _string_literals(path)):
            spelled_elsewhere.setdefault("tags.", []).append(str(path.relative_to(REPO)))
    assert not spelled_elsewhere, spelled_elsewhere


def test_the_family_list_is_written_once():
    def family_lists(path):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(values) == len(node.elts) >= 2 and set(values) == {"cnn", "fc"}:
                    yield node.lineno

    found = {str(p.relative_to(REPO)): list(family_lists(p)) for p in _sources()
             if p != FAMILIES_MODULE}
    assert not {path: lines for path, lines in found.items() if lines}


def test_the_architecture_doc_names_every_module_and_only_those():
    doc = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(pipeline/[\w/]+\.py)`", doc))
    named |= {f"{folder}__init__.py" for folder in re.findall(r"`(pipeline/[\w/]+/)`", doc)}
    existing = {str(p.relative_to(REPO)) for p in _sources()}
    undocumented = {p for p in existing - named if not p.endswith("__init__.py")}
    assert not undocumented, f"modules missing from docs/architecture.md: {undocumented}"
    assert not named - existing, f"docs/architecture.md names modules that do not exist: " \
                                 f"{named - existing}"


def _project_imports(path):
    """The project modules a file imports (at the top or inside functions), as files."""

    def as_file(name):
        module = REPO / Path(*name.split("."))
        if module.with_suffix(".py").is_file():
            return module.with_suffix(".py")
        return module / "__init__.py" if (module / "__init__.py").is_file() else None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            files = [as_file(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module`, or `from module import name` (the module itself)
            files = [as_file(f"{node.module}.{alias.name}") or as_file(node.module)
                     for alias in node.names]
        else:
            continue
        found |= {f for f in files if f is not None and "pipeline" == f.relative_to(REPO).parts[0]}
    return found


def _closure(start):
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _project_imports(path) - seen
    return seen


def test_every_stage_lists_the_modules_it_runs_as_deps():
    """A change to a module a stage imports must rerun the stage: dvc.yaml's deps cover the
    stage module and everything it imports, transitively."""
    import yaml

    missing = {}
    for dvc_file in (REPO / "dvc.yaml", REPO / "lessons" / "dvc.yaml"):  # lessons: wdir ..
        for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
            spec = stage.get("do", stage)
            command = spec["cmd"].split()[spec["cmd"].split().index("pipeline") + 1]
            command = command.replace("-", "_")  # equal-time: pipeline/equal_time.py
            deps = [REPO / d.replace("${item}", "cnn") for d in spec["deps"]]
            entry = PACKAGE / f"{command}.py"
            if not entry.is_file():  # a stage that is a package: its run module
                entry = PACKAGE / command / "run.py"
            for module in sorted(_closure(entry)):
                if not any(module == d or d in module.parents for d in deps):
                    missing.setdefault(name, []).append(str(module.relative_to(REPO)))
    assert not missing, f"stage deps miss modules the stages import: {missing}"


def test_each_search_reads_every_tune_key_but_the_other_familys_overrides():
    import yaml

    from pipeline.config import TuneParams

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = {p for p in stages["tune"]["do"]["params"] if isinstance(p, str)}
    # the seed count is the replicate stage's: changing it must not rerun a search
    wanted = {f"tune.{f}" for f in TuneParams.model_fields
              if f not in ("per_family", "final_seeds")}
    assert wanted | {"tune.per_family.${item}"} <= listed
    assert "tune" not in listed and "tune.per_family" not in listed
    assert "tune.final_seeds" not in listed
    replicate = set(stages["replicate"]["do"]["params"])
    assert {"tune.final_seeds", "tune.per_family.${item}", "tune.final_budget_minutes",
            "tune.deterministic", "augmentation"} <= replicate
