"""Declarative search spaces: a YAML file -> validated entries -> KerasTuner ``hp`` calls.

A space file names its family and lists hyperparameters in order::

    family: cnn
    hyperparameters:
      optimizer: {type: choice, values: [sgd, nesterov, adam], default: nesterov}
      momentum:  {type: float, min: 0.8, max: 0.95, default: 0.9,
                  when: {optimizer: [nesterov]}}      # exists only for these parents
      batch_size: {type: fixed, value: 256}

Types: choice (values), int (min, max, step), float (min, max, step, sampling linear|log),
boolean, fixed (value). A ``when`` parent must be declared above its child.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import MISSING, ConfigError

TYPES = {
    "choice": {"values", "default"},
    "int": {"min", "max", "step", "default"},
    "float": {"min", "max", "step", "sampling", "default"},
    "boolean": {"default"},
    "fixed": {"value"},
}
COMMON_KEYS = {"type", "when", "help"}


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    spec: dict[str, Any]
    parent: str | None = None
    parent_values: tuple = ()
    help: str = ""

    def possible_values(self) -> list | None:
        """The finite set of values this entry can take (None for ranges)."""
        if self.type == "choice":
            return list(self.spec["values"])
        if self.type == "boolean":
            return [True, False]
        if self.type == "fixed":
            return [self.spec["value"]]
        if self.type == "int" and self.spec.get("step", 1) and \
                (self.spec["max"] - self.spec["min"]) // self.spec.get("step", 1) < 64:
            return list(range(self.spec["min"], self.spec["max"] + 1, self.spec.get("step", 1)))
        return None

    def describe(self) -> str:
        s = self.spec
        if self.type == "choice":
            text = "one of " + ", ".join(map(str, s["values"]))
        elif self.type in ("int", "float"):
            text = f"{s['min']} .. {s['max']}"
            if s.get("step"):
                text += f" step {s['step']}"
            if s.get("sampling", "linear") != "linear":
                text += f" ({s['sampling']})"
        elif self.type == "boolean":
            text = "true or false"
        else:
            text = f"fixed at {s['value']}"
        if "default" in s:
            text += f"; default {s['default']}"
        if self.parent:
            text += f"; only when {self.parent} in {list(self.parent_values)}"
        return text


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    family: str
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def declare(self, hp) -> dict[str, Any]:
        """Register every entry with a KerasTuner ``HyperParameters``; return the active values.

        Inactive conditional values are left out, so callers fall back to their defaults.
        """
        values = {}
        for entry in self.entries:
            condition = {}
            if entry.parent:
                condition = {"parent_name": entry.parent,
                             "parent_values": list(entry.parent_values)}
            value = _declare_one(hp, entry, condition)
            if value is not None:
                values[entry.name] = value
        return values

    def with_fixed(self, values: dict[str, Any]) -> SearchSpace:
        """This space with ``values`` fixed: a searched entry of that name becomes a fixed one,
        a missing name is added as fixed (the equal-time FC takes the CNN's augmentation)."""
        entries = [Entry(e.name, "fixed", {"value": values[e.name]}, help=e.help)
                   if e.name in values else e for e in self.entries]
        entries += [Entry(name, "fixed", {"value": value}) for name, value in values.items()
                    if name not in self.names()]
        return SearchSpace(self.path, self.family, tuple(entries))

    def summary(self) -> str:
        width = max((len(name) for name in self.names()), default=0)
        lines = [f"search space {self.path} (family {self.family}, {len(self.entries)} entries)"]
        for entry in self.entries:
            line = f"  {entry.name.ljust(width)}  {entry.type:<7}  {entry.describe()}"
            if entry.help:
                line += f"  # {entry.help}"
            lines.append(line)
        return "\n".join(lines)


def _declare_one(hp, entry: Entry, condition: dict):
    s = entry.spec
    if entry.type == "choice":
        return hp.Choice(entry.name, s["values"], default=s.get("default"), **condition)
    if entry.type == "int":
        return hp.Int(entry.name, s["min"], s["max"], step=s.get("step"),
                      default=s.get("default"), **condition)
    if entry.type == "float":
        return hp.Float(entry.name, float(s["min"]), float(s["max"]), step=s.get("step"),
                        sampling=s.get("sampling", "linear"), default=s.get("default"),
                        **condition)
    if entry.type == "boolean":
        return hp.Boolean(entry.name, default=s.get("default", False), **condition)
    return hp.Fixed(entry.name, s["value"], **condition)


# a value and the unit it can be drawn in instead (pipeline/training.py, resolve_units)
ONE_OF = (("learning_rate", "lr_multiplier"), ("weight_decay", "decay_per_step"))


def load_space(path: str | Path, family: str | None = None,
               known: set[str] | None = None) -> SearchSpace:
    """Read and validate a space file; ConfigError (file, key, value) on the first fault.

    ``known``: the hyperparameter names the family's builder understands.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, None, MISSING, "search space file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(path, None, MISSING, f"not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, MISSING, "should be a mapping with family and "
                                               "hyperparameters")
    extra = set(raw) - {"family", "hyperparameters", "description"}
    if extra:
        raise ConfigError(path, sorted(extra)[0], MISSING,
                          "unknown key (known keys: family, hyperparameters, description)")
    found_family = raw.get("family")
    if family is not None and found_family != family:
        raise ConfigError(path, "family", found_family, f"should be {family!r}")
    hps = raw.get("hyperparameters")
    if not isinstance(hps, dict) or not hps:
        raise ConfigError(path, "hyperparameters", hps, "should be a non-empty mapping")
    entries: dict[str, Entry] = {}
    for name, spec in hps.items():
        entries[name] = _entry(path, str(name), spec, entries, known)
    for value, unit in ONE_OF:
        if value in entries and unit in entries:
            raise ConfigError(path, f"hyperparameters.{unit}", MISSING,
                              f"give {value} or {unit}, not both (the unit sets the value)")
    return SearchSpace(path, str(found_family), tuple(entries.values()))


def _entry(path: Path, name: str, spec: Any, seen: dict[str, Entry],
           known: set[str] | None) -> Entry:
    key = f"hyperparameters.{name}"

    def fail(sub: str | None, value: Any, problem: str) -> ConfigError:
        return ConfigError(path, f"{key}.{sub}" if sub else key, value, problem)

    if known is not None and name not in known:
        raise fail(None, MISSING, f"unknown hyperparameter (known: {', '.join(sorted(known))})")
    if not isinstance(spec, dict):
        raise fail(None, spec, "should be a mapping with a type")
    kind = spec.get("type")
    if kind not in TYPES:
        raise fail("type", kind, f"unknown type (one of: {', '.join(TYPES)})")
    for extra in sorted(set(spec) - TYPES[kind] - COMMON_KEYS):
        raise fail(extra, MISSING, f"unknown key for type {kind} "
                                   f"(known: {', '.join(sorted(TYPES[kind] | COMMON_KEYS))})")
    body = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    if kind == "choice":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise fail("values", values, "should be a non-empty list")
        if len({type(v) for v in values}) > 1:
            raise fail("values", values, "should all have the same type")
        if "default" in body and body["default"] not in values:
            raise fail("default", body["default"], "not one of the values")
    elif kind in ("int", "float"):
        _check_range(body, kind, fail)
    elif kind == "boolean":
        if "default" in body and not isinstance(body["default"], bool):
            raise fail("default", body["default"], "should be true or false")
    elif "value" not in body:
        raise fail("value", MISSING, "a fixed entry needs a value")

    parent, parent_values = None, ()
    if "when" in spec:
        parent, parent_values = _condition(spec["when"], seen, fail)
    return Entry(name, kind, body, parent, parent_values, str(spec.get("help", "")))


def _check_range(body: dict, kind: str, fail) -> None:
    number = int if kind == "int" else (int, float)
    for bound in ("min", "max"):
        value = body.get(bound, MISSING)
        if value is MISSING:
            raise fail(bound, MISSING, f"a {kind} entry needs {bound}")
        if isinstance(value, bool) or not isinstance(value, number):
            raise fail(bound, value, f"should be {'an integer' if kind == 'int' else 'a number'}")
    if body["min"] > body["max"]:
        raise fail("min", body["min"], f"greater than max ({body['max']})")
    sampling = body.get("sampling", "linear")
    if sampling not in ("linear", "log"):
        raise fail("sampling", sampling, "should be linear or log")
    if sampling == "log" and body["min"] <= 0:
        raise fail("min", body["min"], "log sampling needs min > 0")
    step = body.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise fail("step", step, "should be a positive number")
    default = body.get("default")
    if default is not None and not body["min"] <= default <= body["max"]:
        raise fail("default", default, f"outside {body['min']} .. {body['max']}")


def _condition(when: Any, seen: dict[str, Entry], fail) -> tuple[str, tuple]:
    if not isinstance(when, dict) or len(when) != 1:
        raise fail("when", when, "should be {parent: [values]} with one parent")
    (parent, values), = when.items()
    if parent not in seen:
        raise fail("when", parent, "condition on an unknown parent (declare the parent above)")
    values = values if isinstance(values, list) else [values]
    if not values:
        raise fail("when", when, "needs at least one parent value")
    possible = seen[parent].possible_values()
    if possible is not None:
        for value in values:
            if value not in possible:
                raise fail("when", value, f"not a value {parent} can take ({possible})")
    return parent, tuple(values)
