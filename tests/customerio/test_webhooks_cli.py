"""``ciolake webhooks``, run through typer's CliRunner against the fake App API on a real socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ciolake.cli import webhooks
from ciolake.cli.app import app as main_app
from ciolake.customerio import client as client_module
from ciolake.customerio.client import API_KEY_ENV
from ciolake.customerio.events_catalog import EVENT_NAMES, GROUPS
from tests.customerio.conftest import MakeFake
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi

PATH = "/v1/reporting_webhooks"
ENDPOINT = "https://lake.example.com/webhooks/customerio"
runner = CliRunner()


@pytest.fixture
def fake(make_fake_app_api: MakeFake) -> FakeAppApi:
    """A fake App API on the real clock, as the CLI sleeps for real."""
    return make_fake_app_api()


def run(fake: FakeAppApi, *args: str, key: str | None = TEST_API_KEY) -> Result:
    env = {API_KEY_ENV: key, "COLUMNS": "200", "CIOLAKE_CIO_REGION": None}
    return runner.invoke(webhooks.app, [*args, "--base-url", fake.base_url], env=env)


def run_json(fake: FakeAppApi, *args: str) -> Any:
    result = run(fake, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ensure_args(*extra: str) -> list[str]:
    return ["ensure", "--name", "ciolake", "--endpoint", ENDPOINT, *extra]


def test_registered_in_the_main_command() -> None:
    result = runner.invoke(main_app, ["webhooks", "--help"])

    assert result.exit_code == 0
    for command in ("list", "get", "create", "update", "delete", "enable", "disable", "ensure"):
        assert command in result.stdout


# ensure ------------------------------------------------------------------------------------------


def test_ensure_creates_in_one_run_then_changes_nothing(fake: FakeAppApi) -> None:
    first = run_json(fake, *ensure_args("--events", "all", "--full-resolution"))

    assert first["action"] == "created"
    assert fake.calls() == [("GET", PATH), ("POST", PATH)]
    (stored,) = fake.webhooks.values()
    assert set(stored["events"]) == EVENT_NAMES
    assert stored["full_resolution"] is True
    assert stored["endpoint"] == ENDPOINT
    assert {change["field"] for change in first["changes"]} == {
        "name",
        "endpoint",
        "events",
        "disabled",
        "full_resolution",
        "with_content",
    }

    fake.clear_requests()
    second = run(fake, *ensure_args("--events", "all", "--full-resolution"))

    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.stdout
    assert fake.calls() == [("GET", PATH)]


def test_ensure_updates_only_what_differs(fake: FakeAppApi) -> None:
    seeded = fake.seed(
        name="ciolake", endpoint=ENDPOINT, events=sorted(GROUPS["email"]), with_content=True
    )

    outcome = run_json(fake, *ensure_args("--events", "email", "--events", "sms,customer"))

    assert outcome["action"] == "updated"
    (change,) = outcome["changes"]
    assert change["field"] == "events"
    assert change["added"] == sorted(GROUPS["sms"] | GROUPS["customer"])
    assert change["removed"] == []
    assert fake.calls() == [("GET", PATH), ("PUT", f"{PATH}/{seeded['id']}")]
    stored = fake.webhooks[seeded["id"]]
    assert stored["with_content"] is True  # not given, so kept
    assert set(stored["events"]) == GROUPS["email"] | GROUPS["sms"] | GROUPS["customer"]


def test_ensure_prints_the_field_by_field_difference(fake: FakeAppApi) -> None:
    fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent", "email_sent"])

    result = run(fake, *ensure_args("--events", "sms_sent,push", "--full-resolution"))

    assert result.exit_code == 0, result.output
    assert "Updated reporting webhook 1 'ciolake'" in result.stdout
    assert "full_resolution" in result.stdout
    assert "false -> true" in result.stdout
    assert "added: push" in result.stdout
    assert "removed: email_sent" in result.stdout
    assert "endpoint" not in result.stdout


def test_ensure_events_in_another_order_are_no_change(fake: FakeAppApi) -> None:
    fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent", "email_sent"])

    outcome = run_json(fake, *ensure_args("--events", "email_sent", "--events", "sms_sent"))

    assert outcome["action"] == "unchanged"
    assert outcome["changes"] == []
    assert fake.calls() == [("GET", PATH)]


def test_ensure_dry_run_changes_nothing(fake: FakeAppApi) -> None:
    seeded = fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent"])

    result = run(fake, *ensure_args("--events", "all", "--disabled", "--dry-run"))

    assert result.exit_code == 0, result.output
    assert "Dry run: would update reporting webhook 1 'ciolake'" in result.stdout
    assert "false -> true" in result.stdout
    assert fake.calls() == [("GET", PATH)]
    assert fake.webhooks[seeded["id"]] == seeded


def test_ensure_dry_run_of_a_new_webhook_creates_nothing(fake: FakeAppApi) -> None:
    outcome = run_json(fake, *ensure_args("--events", "email", "--dry-run"))

    assert outcome["action"] == "created"
    assert outcome["dry_run"] is True
    assert outcome["webhook"]["id"] is None
    assert fake.calls() == [("GET", PATH)]
    assert fake.webhooks == {}


def test_ensure_finds_the_webhook_by_endpoint_and_renames_it(fake: FakeAppApi) -> None:
    seeded = fake.seed(name="old name", endpoint=ENDPOINT, events=["sms_sent"])
    fake.seed(name="other", endpoint="https://other.example/x", events=["sms_sent"])

    outcome = run_json(fake, *ensure_args("--events", "sms_sent"))

    assert outcome["action"] == "updated"
    assert outcome["changes"] == [{"field": "name", "before": "old name", "after": "ciolake"}]
    assert fake.webhooks[seeded["id"]]["name"] == "ciolake"
    assert len(fake.webhooks) == 2


def test_ensure_refuses_an_ambiguous_name(fake: FakeAppApi) -> None:
    for _ in range(2):
        fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent"])

    result = run(fake, *ensure_args("--events", "sms_sent"))

    assert result.exit_code == 2
    assert "several webhooks have name 'ciolake' (ids 1, 2)" in result.stderr
    assert fake.calls() == [("GET", PATH)]


def test_ensure_from_a_toml_file_with_flags_overriding(fake: FakeAppApi, tmp_path: Path) -> None:
    spec = tmp_path / "webhook.toml"
    spec.write_text(
        f'name = "from-file"\nendpoint = "{ENDPOINT}"\nevents = ["email", "customer_subscribed"]\n'
        "full_resolution = true\nwith_content = true\n"
    )

    outcome = run_json(fake, "ensure", "--file", str(spec), "--no-with-content")

    assert outcome["action"] == "created"
    (stored,) = fake.webhooks.values()
    assert stored["name"] == "from-file"
    assert set(stored["events"]) == GROUPS["email"] | {"customer_subscribed"}
    assert (stored["full_resolution"], stored["with_content"]) == (True, False)

    fake.clear_requests()
    again = run_json(fake, "ensure", "--file", str(spec), "--no-with-content")
    assert again["action"] == "unchanged"
    assert fake.calls() == [("GET", PATH)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('name = "x"\nendpoint = \n', "is not valid TOML"),
        ('name = "x"\ncolour = "blue"\n', "unknown field `colour`"),
        ("full_resolution = 1\n", "Expected `bool | null`, got `int`"),
    ],
)
def test_ensure_rejects_a_bad_file_before_any_request(
    fake: FakeAppApi, tmp_path: Path, content: str, message: str
) -> None:
    spec = tmp_path / "webhook.toml"
    spec.write_text(content)

    result = run(fake, "ensure", "--file", str(spec))

    assert result.exit_code == 2
    assert message in result.stderr
    assert fake.requests == []


def test_ensure_needs_name_endpoint_and_events(fake: FakeAppApi, tmp_path: Path) -> None:
    result = run(fake, "ensure", "--name", "ciolake")
    missing_file = run(fake, "ensure", "--file", str(tmp_path / "absent.toml"))

    assert result.exit_code == 2
    assert "ensure needs --endpoint, --events" in result.stderr
    assert missing_file.exit_code == 2
    assert "cannot read" in missing_file.stderr
    assert fake.requests == []


# Input checks before any request -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["create", "ensure"])
def test_unknown_event_names_are_rejected_before_any_request(
    fake: FakeAppApi, command: str
) -> None:
    args = [command, "--name", "x", "--endpoint", ENDPOINT]
    result = run(fake, *args, "--events", "email_openned,sms", "--events", "cio_subscribed")

    assert result.exit_code == 2
    assert "'cio_subscribed', 'email_openned'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake.requests == []


def test_unknown_event_names_rejected_by_update_before_any_request(fake: FakeAppApi) -> None:
    result = run(fake, "update", "1", "--events", "bogus")

    assert result.exit_code == 2
    assert "'bogus'" in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize("command", ["create", "ensure"])
def test_plain_http_endpoint_needs_allow_http(fake: FakeAppApi, command: str) -> None:
    args = [command, "--name", "x", "--endpoint", "http://lake.example.com/hook", "--events", "all"]

    refused = run(fake, *args)
    assert refused.exit_code == 2
    assert "is not an https URL (--allow-http accepts http)" in refused.stderr
    assert fake.requests == []

    allowed = run(fake, *args, "--allow-http")
    assert allowed.exit_code == 0, allowed.output
    assert [w["endpoint"] for w in fake.webhooks.values()] == ["http://lake.example.com/hook"]


def test_endpoint_must_be_a_url(fake: FakeAppApi) -> None:
    result = run(fake, "create", "--name", "x", "--endpoint", "lake.example.com", "--events", "all")

    assert result.exit_code == 2
    assert "not an https URL" in result.stderr
    assert fake.requests == []


# The other commands ------------------------------------------------------------------------------


def test_create_then_list_and_get(fake: FakeAppApi) -> None:
    created = run_json(
        fake, "create", "--name", "ciolake", "--endpoint", ENDPOINT, "--events", "email,sms_sent"
    )
    webhook_id = created["webhook"]["id"]

    listed = run_json(fake, "list")
    got = run_json(fake, "get", str(webhook_id))
    table = run(fake, "list")
    details = run(fake, "get", str(webhook_id))

    assert created["action"] == "created"
    assert [w["name"] for w in listed] == ["ciolake"]
    assert got == listed[0] == created["webhook"]
    assert got["type"] == "webhook"
    assert table.exit_code == 0
    assert "ciolake" in table.stdout
    assert ENDPOINT in table.stdout
    assert "email, sms_sent (15)" in table.stdout
    assert details.exit_code == 0
    assert "email: all 14" in details.stdout
    assert "sms: sent" in details.stdout
    assert "enabled" in details.stdout


def test_create_needs_every_required_field(fake: FakeAppApi) -> None:
    result = run(fake, "create", "--name", "x")

    assert result.exit_code == 2
    assert "a new webhook needs --endpoint, --events" in result.stderr
    assert fake.requests == []


def test_list_of_an_empty_workspace(fake: FakeAppApi) -> None:
    result = run(fake, "list")

    assert result.exit_code == 0
    assert "No reporting webhooks." in result.stdout
    assert run_json(fake, "list") == []


def test_update_changes_only_the_given_fields(fake: FakeAppApi) -> None:
    seeded = fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent"], disabled=True)

    outcome = run_json(fake, "update", str(seeded["id"]), "--with-content")

    assert outcome["changes"] == [{"field": "with_content", "before": False, "after": True}]
    put = fake.requests[-1]
    assert (put.method, put.path) == ("PUT", f"{PATH}/{seeded['id']}")
    assert put.json() == {
        "name": "ciolake",
        "endpoint": ENDPOINT,
        "events": ["sms_sent"],
        "disabled": True,
        "full_resolution": False,
        "with_content": True,
    }


def test_update_without_fields_is_refused(fake: FakeAppApi) -> None:
    result = run(fake, "update", "1")

    assert result.exit_code == 2
    assert "nothing to update" in result.stderr
    assert fake.requests == []


def test_delete(fake: FakeAppApi) -> None:
    seeded = fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent"])

    deleted = run(fake, "delete", str(seeded["id"]))
    again = run(fake, "delete", str(seeded["id"]))

    assert deleted.exit_code == 0
    assert f"Deleted reporting webhook {seeded['id']}." in deleted.stdout
    assert fake.webhooks == {}
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        f"error: DELETE {PATH}/{seeded['id']}: not found (404): webhook {seeded['id']} not found"
    )


def test_disable_and_enable_are_idempotent(fake: FakeAppApi) -> None:
    seeded = fake.seed(name="ciolake", endpoint=ENDPOINT, events=["sms_sent"])
    item = f"{PATH}/{seeded['id']}"

    disabled = run_json(fake, "disable", str(seeded["id"]))
    assert disabled["changes"] == [{"field": "disabled", "before": False, "after": True}]
    assert fake.webhooks[seeded["id"]]["disabled"] is True

    fake.clear_requests()
    again = run(fake, "disable", str(seeded["id"]))
    assert again.exit_code == 0
    assert "nothing changed" in again.stdout
    assert fake.calls() == [("GET", item)]

    enabled = run_json(fake, "enable", str(seeded["id"]))
    assert enabled["action"] == "updated"
    assert fake.webhooks[seeded["id"]]["disabled"] is False


def test_get_unknown_id_fails_with_the_api_detail(fake: FakeAppApi) -> None:
    result = run(fake, "get", "99")

    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: GET {PATH}/99: not found (404): webhook 99 not found"
    assert result.stdout == ""


def test_a_5xx_is_retried(fake: FakeAppApi) -> None:
    fake.fail_next(1, status=503)

    result = run(fake, "list", "--json")

    assert result.exit_code == 0, result.output
    assert [r.status for r in fake.requests] == [503, 200]


def test_region_chooses_the_base_url(fake: FakeAppApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # Point the EU URL at the fake: no request may leave the machine.
    monkeypatch.setitem(client_module.REGION_BASE_URLS, "eu", fake.base_url)
    env = {API_KEY_ENV: TEST_API_KEY}

    by_flag = runner.invoke(webhooks.app, ["list", "--region", "eu", "--json"], env=env)
    by_env = runner.invoke(
        webhooks.app, ["list", "--json"], env={**env, "CIOLAKE_CIO_REGION": "eu"}
    )
    unknown = runner.invoke(webhooks.app, ["list", "--region", "au"], env=env)

    assert (by_flag.exit_code, by_env.exit_code) == (0, 0)
    assert fake.calls() == [("GET", PATH), ("GET", PATH)]
    assert unknown.exit_code == 2


# The key -----------------------------------------------------------------------------------------


def test_missing_key_is_a_clear_error_before_any_request(fake: FakeAppApi) -> None:
    result = run(fake, "list", key=None)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {API_KEY_ENV} is not set")
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake.requests == []


def test_wrong_key_fails_without_printing_it(fake: FakeAppApi) -> None:
    wrong = "wrong-key-SENTINEL-91c2"

    result = run(fake, "list", key=wrong)

    assert result.exit_code == 1
    assert "(401): unauthorized: invalid or missing App API key" in result.stderr
    assert f"check {API_KEY_ENV}" in result.stderr
    assert wrong not in result.output


def test_the_key_never_appears_in_any_output(make_fake_app_api: MakeFake, tmp_path: Path) -> None:
    key = "sk-SENTINEL-d41d8cd98f00"
    fake = make_fake_app_api(api_key=key, rate_limit_per_s=None)
    spec = tmp_path / "hook.toml"
    spec.write_text(f'name = "k"\nendpoint = "{ENDPOINT}"\nevents = "all"\n')
    commands = [
        ["ensure", "--file", str(spec)],
        ["ensure", "--file", str(spec), "--dry-run", "--disabled"],
        ["list"],
        ["list", "--json"],
        ["get", "1"],
        ["get", "1", "--json"],
        ["update", "1", "--full-resolution"],
        ["disable", "1"],
        ["enable", "1", "--json"],
        ["create", "--name", "n", "--endpoint", ENDPOINT, "--events", "nope"],
        ["get", "42"],
        ["delete", "1"],
    ]

    outputs = [run(fake, *command, key=key) for command in commands]

    assert [r.exit_code for r in outputs] == [0] * 9 + [2, 1, 0]
    for result in outputs:
        assert key not in result.output
        assert key not in (repr(result.exception) if result.exception else "")
    assert all(r.authorization == f"Bearer {key}" for r in fake.requests)
