"""The command line's table of commands: each one found, loaded on demand, and named."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ciolake.cli.app import COMMANDS, app
from ciolake.cli.webhooks import app as webhooks_app

WEBHOOKS_COMMANDS = [info.name for info in webhooks_app.registered_commands]


def test_the_help_lists_every_command_in_order() -> None:
    result = CliRunner().invoke(app, ["--help"], prog_name="ciolake")
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_loads_under_its_own_name(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], prog_name="ciolake")
    assert result.exit_code == 0, result.output
    assert f"Usage: ciolake {name} [OPTIONS]" in result.output


@pytest.mark.parametrize(
    ("group", "subcommand"),
    [("databricks", "setup"), *(("webhooks", name) for name in WEBHOOKS_COMMANDS)],
)
def test_each_command_of_a_group_is_reached_through_it(group: str, subcommand: str) -> None:
    # databricks has one command: a group of one must stay a group, or `databricks setup`
    # is refused as an extra argument.
    result = CliRunner().invoke(app, [group, subcommand, "--help"], prog_name="ciolake")
    assert result.exit_code == 0, result.output
    assert f"Usage: ciolake {group} {subcommand} [OPTIONS]" in result.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["serv"], prog_name="ciolake")
    assert result.exit_code == 2
    assert "No such command 'serv'" in result.output
