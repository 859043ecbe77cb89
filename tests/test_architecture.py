"""The arrows between the rooms, enforced: which module may import what.

Read from the source (every ``import``, at module level or inside a function), plus one check
at run time: what a worker process (the request path) actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ciolake

PACKAGE = Path(ciolake.__file__).parent
HEAVY = ("pyarrow", "deltalake", "duckdb", "obstore")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute, at any depth of the file."""
    tree = ast.parse(path.read_text())
    package = (
        module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    return {module_name(path): set(imported(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def importers_of(target: str) -> set[str]:
    return {
        module
        for module, names in graph().items()
        if any(name == target or name.startswith(target + ".") for name in names)
    }


def within(module: str, *rooms: str) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("deltalake", ("ciolake.lake.delta",)),
        ("obstore", ("ciolake.lake.storage",)),
        ("duckdb", ("ciolake.analytics.duck",)),
        ("pyspark", ("ciolake.derive.spark_job",)),
        ("databricks.sdk", ("ciolake.databricks.workspace",)),
        ("zerobus", ("ciolake.databricks.zerobus",)),
        ("httpx", ("ciolake.customerio", "ciolake.checks")),
    ],
)
def test_a_heavy_library_is_imported_by_its_one_room(
    library: str, allowed: tuple[str, ...]
) -> None:
    strays = sorted(m for m in importers_of(library) if not within(m, *allowed))
    assert not strays, f"{library} imported outside {allowed}: {strays}"


@pytest.mark.parametrize("upper", ["ciolake.cli", "ciolake.web"])
def test_lower_rooms_never_import_the_command_line_or_the_web_app(upper: str) -> None:
    # ``python -m ciolake`` runs the command line; the worker process serves the web app.
    allowed = ("ciolake.cli", "ciolake.web", "ciolake.__main__", "ciolake.runtime.worker")
    strays = sorted(m for m in importers_of(upper) if not within(m, *allowed))
    assert not strays, f"{upper} imported by lower rooms: {strays}"


def test_the_request_path_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import ciolake.runtime.worker, ciolake.web.app, ciolake.receive.webhook\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_graph_is_read_whole() -> None:
    modules = graph()
    assert "ciolake.runtime.worker" in modules
    assert any("ciolake.receive.intake" in names for names in modules.values())


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_the_command_line_loads_a_command_only_when_it_runs() -> None:
    # Every command (even --version) paid for all the others' imports: half a second each.
    modules = loaded_by("from ciolake.cli.app import app")
    heavy = sorted(m for m in modules if m.split(".")[0] in {*HEAVY, "httpx", "uvicorn", "rich"})
    commands = sorted(m for m in modules if within(m, "ciolake") and m != "ciolake.cli.app")
    assert (heavy, commands) == ([], ["ciolake", "ciolake.cli"])


def test_serve_execs_the_supervisor_from_one_thread_without_the_committer() -> None:
    # SIGINT held over the exec is blocked in one thread only: a thread a native library
    # started at import (delta-rs, Arrow) could take a Ctrl-C that the exec then lost.
    load = "from ciolake.cli.app import load_command; load_command('serve')"
    modules = loaded_by(load)
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)
    assert "ciolake.runtime.launch" in modules
    if Path("/proc/self/task").is_dir():
        threads = subprocess.run(
            [sys.executable, "-c", f"{load}\nimport os\nprint(len(os.listdir('/proc/self/task')))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert threads.stdout.strip() == "1"
