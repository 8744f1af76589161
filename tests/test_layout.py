"""House rules a reader relies on, checked on the source: the family list and the MLflow names
each have one home, and docs/architecture.md names exactly the modules that exist."""

import ast
import re

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
