"""Run the real command line and check its one-line answer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

EXIT_USAGE = 2
EXIT_FAILURE = 1


@dataclass(frozen=True)
class CliResult:
    """What a ``ciolake`` run printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


RunCiolake = Callable[..., CliResult]


@pytest.fixture
def run_ciolake(tmp_path: Path) -> RunCiolake:
    """A factory: ``run_ciolake(*args, env={...}, timeout=30, cwd=None)`` runs ``ciolake``."""

    def run(
        *args: str | Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        cwd: Path | None = None,
        stdin: bytes = b"",
    ) -> CliResult:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
        completed = subprocess.run(
            [sys.executable, "-m", "ciolake", *map(str, args)],
            env={**base, **(env or {})},
            cwd=cwd or tmp_path,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return CliResult(
            completed.returncode,
            completed.stdout.decode(errors="replace"),
            completed.stderr.decode(errors="replace"),
        )

    return run


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> None:
    """Exit ``code``, exactly one ``error:`` line naming every fragment, and no traceback."""
    assert result.code == code, (result.code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "panicked" not in result.stderr, result.stderr[-2000:]
    assert len(result.error_lines) == 1, result.stderr[-2000:]
    line = result.error_lines[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), line
