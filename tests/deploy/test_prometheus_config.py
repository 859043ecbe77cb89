"""The example Prometheus configuration scrapes the admin listener and passes promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support import make_settings, promtool

CONFIG = Path(__file__).parents[2] / "deploy" / "prometheus" / "prometheus.yml"


def test_the_example_scrapes_the_admin_listener_by_default() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    defaults = make_settings(Path(), data_dir=Path("data"), signing_keys=(), flush_interval_s=1.0)
    assert static["targets"] == [f"{defaults.admin_host}:{defaults.admin_port}"]
    assert job["metrics_path"] == "/metrics"
    assert defaults.admin_port != defaults.port


def test_promtool_checks_the_config() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(CONFIG)],
        capture_output=True,
        check=False,
        cwd=CONFIG.parent,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
