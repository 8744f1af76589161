"""The install is the tested one: every package the code imports is declared, and what is
installed matches constraints.txt (the versions CI installs and the suite runs with)."""

import ast
import re
import sys
import tomllib
from importlib import metadata

from tests.conftest import REPO


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values()
                                       for s in extra]
    return {_normal(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in specs}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    imported = set()
    for path in (REPO / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"pipeline"}
    distributions = metadata.packages_distributions()
    declared = _declared()
    undeclared = {name for name in third_party
                  if not {_normal(d) for d in distributions.get(name, [name])} & declared}
    assert not undeclared, f"imported but not in pyproject.toml: {sorted(undeclared)}"


def test_the_installed_versions_are_the_tested_ones():
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[_normal(name)] = version
    assert {"keras", "mlflow", "numpy", "pandas", "scipy", "pydantic"} <= set(pinned)
    drift = {}
    for name, version in pinned.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment does not install
        if installed != version:
            drift[name] = (installed, version)
    assert not drift, f"installed vs constraints.txt: {drift}"
