"""The Databricks bundle (deploy/databricks) loads, offline: every resource is valid for
Databricks' own models of bundle resources (``databricks-bundles``), and every variable, file,
entry point, command line flag, table, view and dataset it names exists. Its queries run on
Spark in tests/interop/test_databricks_bundle.py."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import sqlglot
from databricks.bundles.alerts import Alert
from databricks.bundles.apps import App
from databricks.bundles.dashboards import Dashboard
from databricks.bundles.jobs import Job
from sqlglot import exp

from ciolake.analytics.views import view_names
from ciolake.cli.app import load_command
from ciolake.derive.spark_job import build_parser
from ciolake.lake.tables import ALL_SPECS
from tests.deploy.bundle import (
    BUNDLE,
    REPO,
    Bundle,
    load_bundle,
    query_text,
    references,
    substitute,
    widgets,
)

MODELS: dict[str, Callable[[Any], Any]] = {
    "jobs": Job.from_dict,
    "alerts": Alert.from_dict,
    "dashboards": Dashboard.from_dict,
    "apps": App.from_dict,
}
# A value for each variable without a default, as `databricks bundle deploy --var` gives it.
GIVEN = {
    "tables_location": "s3://lake/ciolake",
    "warehouse_id": "abc123",
    "alert_email": "data@example.com",
}
CATALOG, SCHEMA = "main", "ciolake"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle()


def values(bundle: Bundle) -> dict[str, str]:
    """Every variable's value: its default, or the one given on the command line."""
    declared = bundle.variables().items()
    found = {name: str(GIVEN.get(name, spec.get("default"))) for name, spec in declared}
    # Defaults may reference other variables.
    return {name: substitute(value, found) for name, value in found.items()}


def test_every_resource_is_valid_for_databricks_models(bundle: Bundle) -> None:
    kinds = {resource.kind for resource in bundle.resources}
    assert kinds == set(MODELS), "a resource kind without a model check"
    for resource in bundle.resources:
        MODELS[resource.kind](substitute(resource.body, values(bundle)))
    keys = {(r.kind, r.key) for r in bundle.resources}
    assert {("jobs", "ciolake_derive"), ("jobs", "ciolake_maintenance")} <= keys
    assert ("jobs", "ciolake_views") in keys
    assert len(bundle.of_kind("alerts")) == 3


def test_a_misspelt_field_is_caught_by_the_models(bundle: Bundle) -> None:
    (derive,) = [r for r in bundle.of_kind("jobs") if r.key == "ciolake_derive"]
    body = substitute(derive.body, values(bundle))
    body["tasks"][0]["python_wheel_task"]["entrypoint"] = "ciolake-spark"
    with pytest.raises(ValueError, match="entrypoint"):
        Job.from_dict(body)


def test_every_variable_is_declared_used_and_given(bundle: Bundle) -> None:
    used = set(references([r.body for r in bundle.resources]))
    used |= set(references(bundle.root))
    declared = set(bundle.variables())
    assert used == declared
    without_default = {n for n, spec in bundle.variables().items() if "default" not in spec}
    assert without_default == set(GIVEN)
    # The deploy command in databricks.yml's header gives each of them.
    header = (BUNDLE / "databricks.yml").read_text()
    assert all(f'--var="{name}=' in header for name in without_default)


def test_every_file_named_exists(bundle: Bundle) -> None:
    included = {f.relative_to(BUNDLE) for f in bundle.files[1:]}
    assert included == {f.relative_to(BUNDLE) for f in (BUNDLE / "resources").glob("*.yml")}
    (dashboard,) = bundle.of_kind("dashboards")
    assert dashboard.path(dashboard.body["file_path"]).is_file()
    (artifact,) = bundle.root["artifacts"].values()
    project = (BUNDLE / artifact["path"]).resolve()
    assert (project / "pyproject.toml").is_file()
    assert "--wheel-dir dist" in artifact["build"]
    for job in bundle.of_kind("jobs"):
        for environment in job.body["environments"]:
            for dependency in environment["spec"]["dependencies"]:
                assert job.path(dependency) == project / "dist" / "*.whl"


def test_the_wheel_tasks_run_ciolake_spark_with_flags_it_has(bundle: Bundle) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    parser = build_parser()
    commands = set()
    for job in bundle.of_kind("jobs"):
        for task in substitute(job.body, values(bundle))["tasks"]:
            wheel = task["python_wheel_task"]
            assert wheel["package_name"] == pyproject["project"]["name"]
            assert wheel["entry_point"] in pyproject["project"]["scripts"]
            assert pyproject["project"]["scripts"][wheel["entry_point"]].startswith(
                "ciolake.derive.spark_job:"
            )
            args = parser.parse_args(wheel["parameters"])  # exits on an unknown flag
            commands.add(args.command)
    assert commands == {"derive", "maintain", "views"}


def _tables(sql: str) -> tuple[set[str], set[str]]:
    """(qualified tables read, other names read that are not the query's own CTEs)."""
    tree = sqlglot.parse_one(sql, read="databricks")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    qualified, other = set(), set()
    for table in tree.find_all(exp.Table):
        if table.db:
            assert (table.catalog, table.db) == (CATALOG, SCHEMA), table.sql()
            qualified.add(table.name)
        elif table.name and table.name not in ctes:
            other.add(table.name)
    return qualified, other


def test_the_alerts_read_ciolake_tables_only(bundle: Bundle) -> None:
    read: set[str] = set()
    for alert in bundle.of_kind("alerts"):
        body = substitute(alert.body, {**values(bundle), "catalog": CATALOG, "schema": SCHEMA})
        qualified, other = _tables(body["query_text"])
        assert qualified <= set(ALL_SPECS), qualified - set(ALL_SPECS)
        assert not other, other
        source = body["evaluation"]["source"]["name"]
        select = sqlglot.parse_one(body["query_text"], read="databricks")
        assert isinstance(select, exp.Select)
        assert select.named_selects[0] == source, "the alert judges the first column"
        read |= qualified
    assert {"raw_events", "quarantine", "email_events", "whatsapp_events"} <= read


def test_the_dashboard_reads_views_and_every_widget_its_dataset(bundle: Bundle) -> None:
    dashboard = bundle.dashboard()
    datasets = {d["name"]: query_text(d) for d in dashboard["datasets"]}
    known = set(view_names()) | set(ALL_SPECS)
    for sql in datasets.values():
        qualified, other = _tables(sql)
        assert not qualified, "datasets use the dashboard's dataset_catalog and dataset_schema"
        assert other <= known, other - known
    used = set()
    for widget in widgets(dashboard):
        (query,) = widget["queries"]
        assert query["query"]["datasetName"] in datasets
        used.add(query["query"]["datasetName"])
        fields = {f["name"] for f in query["query"]["fields"]}
        encodings = widget["spec"]["encodings"]
        named = [e["fieldName"] for e in encodings.get("columns", [])]
        named += [e["fieldName"] for k, e in encodings.items() if k != "columns"]
        assert named, widget["name"]
        assert set(named) <= fields, (widget["name"], set(named) - fields)
    assert used == set(datasets), "a dataset no widget shows"


def test_the_app_runs_the_dashboard_command_from_the_wheel_it_is_given(bundle: Bundle) -> None:
    (app,) = bundle.of_kind("apps")
    body = substitute(app.body, values(bundle))
    source = app.path(body["source_code_path"])
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wheel = f"{pyproject['name']}-{pyproject['version']}-py3-none-any.whl"
    lines = (source / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [f"./{wheel}[databricks]"]
    (artifact,) = bundle.root["artifacts"].values()
    assert f"cp dist/{wheel} deploy/databricks/app/" in artifact["build"]
    assert (BUNDLE / artifact["path"]).resolve() / "deploy/databricks/app" == source

    command = body["config"]["command"]
    assert command[:2] == ["ciolake", "dashboard"]
    parsed = load_command("dashboard").make_context("dashboard", list(command[2:]))
    assert parsed.params["databricks_app"] is True
    assert (parsed.params["catalog"], parsed.params["schema"]) == ("main", "ciolake")
    env = {e["name"]: e for e in body["config"]["env"]}
    (warehouse,) = [r for r in body["resources"] if "sql_warehouse" in r]
    assert env["DATABRICKS_WAREHOUSE_ID"]["value_from"] == warehouse["name"]
