"""The Databricks bundle in deploy/databricks, read as the Databricks CLI reads it: the root
file, the resource files it includes, ``${var.name}`` references, and paths relative to the file
that names them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "deploy" / "databricks"
VARIABLE = re.compile(r"\$\{var\.([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource of the bundle, and the file it is defined in."""

    kind: str
    key: str
    body: dict[str, Any]
    source: Path

    def path(self, relative: str) -> Path:
        """A path the resource names, as the CLI resolves it (from the defining file)."""
        return (self.source.parent / relative).resolve()


@dataclass(frozen=True, slots=True)
class Bundle:
    root: dict[str, Any]
    files: tuple[Path, ...]
    resources: tuple[Resource, ...]

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def variables(self) -> dict[str, dict[str, Any]]:
        declared: dict[str, dict[str, Any]] = self.root["variables"]
        return declared

    def dashboard(self) -> dict[str, Any]:
        (resource,) = self.of_kind("dashboards")
        document: dict[str, Any] = json.loads(resource.path(resource.body["file_path"]).read_text())
        return document


def load_bundle() -> Bundle:
    """The root ``databricks.yml`` and every resource of the files it includes."""
    root_file = BUNDLE / "databricks.yml"
    root = yaml.safe_load(root_file.read_text())
    files = [root_file]
    for pattern in root.get("include", []):
        files += sorted(BUNDLE.glob(pattern))
    resources = []
    for file in files:
        document = yaml.safe_load(file.read_text()) or {}
        for kind, entries in document.get("resources", {}).items():
            resources += [Resource(kind, key, body, file) for key, body in entries.items()]
    return Bundle(root, tuple(files), tuple(resources))


def substitute(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every ``${var.name}`` replaced, in nested lists and mappings too."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    return value


def references(value: Any) -> Iterator[str]:
    """Every variable name referenced in ``value``."""
    if isinstance(value, str):
        yield from VARIABLE.findall(value)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)


def query_text(dataset: Mapping[str, Any]) -> str:
    """A dashboard dataset's query."""
    return "".join(dataset["queryLines"])


def widgets(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every widget of every page."""
    for page in dashboard["pages"]:
        for item in page["layout"]:
            yield item["widget"]
