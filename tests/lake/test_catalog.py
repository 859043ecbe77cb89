"""Tables in Unity Catalog (``uc://catalog.schema``), resolved through the fake workspace with
databricks-sdk: each table's location once, its vended credentials again before they expire,
and every way Unity Catalog can refuse named with what to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from ciolake.databricks.workspace import connect_catalog
from ciolake.errors import (
    ConfigurationError,
    InputError,
    StoreUnavailableError,
    TableUnreadableError,
)
from ciolake.lake import catalog as unity
from ciolake.lake.catalog import UnityTables
from ciolake.lake.location import parse_location, storage_options
from tests.fakes.databricks import FakeWorkspace, catalog_table, fake_workspace

SCHEMA = "main.ciolake"
LIFETIME_S = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def aws_vending(clock: Clock) -> Any:
    """Vends a new key pair at each call, expiring an hour after the clock's time."""
    count = 0

    def vend(table_id: str) -> dict[str, Any]:
        nonlocal count
        count += 1
        return {
            "aws_temp_credentials": {
                "access_key_id": f"ASIA{count:04d}",
                "secret_access_key": f"secret-{count}",
                "session_token": f"token-{count}",
            },
            "expiration_time": int((clock.now + LIFETIME_S) * 1000),
            "url": "s3://lake/uc",
        }

    return vend


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def workspace(clock: Clock) -> Iterator[FakeWorkspace]:
    with fake_workspace() as fake:
        for name in ("raw_events", "email_events"):
            full_name = f"{SCHEMA}.{name}"
            fake.catalog_tables[full_name] = catalog_table(full_name, f"s3://lake/uc/{name}/")
        fake.catalog_tables[f"{SCHEMA}.quarantine"] = catalog_table(
            f"{SCHEMA}.quarantine", "s3://managed/x", table_type="MANAGED"
        )
        fake.vend = aws_vending(clock)
        yield fake


def tables_of(workspace: FakeWorkspace, clock: Clock, *, timeout_s: float = 15) -> UnityTables:
    catalog = connect_catalog(
        host=workspace.url,
        client_id=workspace.client_id,
        client_secret=workspace.client_secret,
        timeout_s=timeout_s,
    )
    return UnityTables(catalog, SCHEMA, clock=clock, host=workspace.url)


def test_a_table_is_found_once_and_its_credentials_renewed_before_they_expire(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    tables = tables_of(workspace, clock)
    assert tables.uri("raw_events") == "s3://lake/uc/raw_events"
    first = tables.options("raw_events")
    assert first == {
        "aws_access_key_id": "ASIA0001",
        "aws_secret_access_key": "secret-1",
        "aws_session_token": "token-1",
    }
    raw_id = workspace.catalog_tables[f"{SCHEMA}.raw_events"]["table_id"]

    clock.now += LIFETIME_S * 0.74
    assert tables.options("raw_events") is first, "still three quarters of its life: kept"
    assert workspace.vended == [raw_id]

    clock.now += LIFETIME_S * 0.02
    renewed = tables.options("raw_events")
    assert renewed != first
    assert renewed["aws_access_key_id"] == "ASIA0002"
    assert workspace.vended == [raw_id, raw_id]
    # Each table has credentials of its own (Unity Catalog scopes them to its path).
    email = tables.options("email_events")
    assert email["aws_access_key_id"] == "ASIA0003"
    assert tables.uri("raw_events") == "s3://lake/uc/raw_events"


def test_obstore_is_given_the_credentials_due_when_they_would_be_renewed(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    credential = tables_of(workspace, clock).credential("raw_events")
    assert credential["access_key_id"] == "ASIA0001"
    assert credential["secret_access_key"] == "secret-1"
    assert credential["token"] == "token-1"
    due = credential["expires_at"].timestamp()
    assert due == pytest.approx(clock.now + LIFETIME_S * (1 - unity.RENEW_WHEN_LEFT))


def test_a_table_missing_from_the_catalog_names_the_setup_command(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    with pytest.raises(TableUnreadableError) as raised:
        tables_of(workspace, clock).uri("sms_events")
    message = str(raised.value)
    assert "main.ciolake.sms_events is not in Unity Catalog" in message
    assert "ciolake databricks setup --catalog main --schema ciolake" in message


def test_a_managed_table_is_refused(workspace: FakeWorkspace, clock: Clock) -> None:
    with pytest.raises(TableUnreadableError, match="MANAGED DELTA table; ciolake writes only"):
        tables_of(workspace, clock).uri("quarantine")


def test_credentials_refused_name_the_privileges_needed(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    workspace.vend = None
    with pytest.raises(TableUnreadableError, match="EXTERNAL USE SCHEMA on the schema"):
        tables_of(workspace, clock).options("raw_events")


def test_a_catalog_that_does_not_answer_is_out_of_reach_within_the_time_limit(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    tables = tables_of(workspace, clock, timeout_s=1)
    workspace.catalog_down = True
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"Unity Catalog at http://127\.0\.0\.1"):
        tables.uri("raw_events")
    assert time.monotonic() - started < 10
    workspace.catalog_down = False
    assert tables.uri("raw_events") == "s3://lake/uc/raw_events", "and it comes back"


def test_azure_credentials_are_a_sas_token_and_others_are_refused(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    expires = int((clock.now + LIFETIME_S) * 1000)
    workspace.vend = lambda _id: {
        "azure_user_delegation_sas": {"sas_token": "sv=2025&sig=x"},
        "expiration_time": expires,
    }
    tables = tables_of(workspace, clock)
    assert tables.options("raw_events") == {"azure_storage_sas_token": "sv=2025&sig=x"}
    assert tables.credential("raw_events")["sas_token"] == "sv=2025&sig=x"

    workspace.vend = lambda _id: {
        "gcp_oauth_token": {"oauth_token": "ya29"},
        "expiration_time": expires,
    }
    with pytest.raises(TableUnreadableError, match="vended gcp_oauth_token"):
        tables.options("email_events")


@pytest.mark.parametrize(
    "uri",
    ["uc://main", "uc://main.ciolake.raw_events", "uc://main.cio-lake", "uc://main.ciolake/x"],
)
def test_a_tables_uri_of_unity_catalog_names_one_schema(uri: str) -> None:
    with pytest.raises(InputError, match=r"uc://catalog\.schema"):
        parse_location(uri)


def test_a_schema_in_unity_catalog_is_a_remote_location() -> None:
    location = parse_location("uc://main.ciolake/")
    assert (location.uri, location.scheme, location.remote) == ("uc://main.ciolake", "uc", True)
    assert location.catalog_schema == "main.ciolake"
    assert parse_location("s3://lake/tables").catalog_schema is None


def test_signing_in_needs_the_service_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    with pytest.raises(ConfigurationError) as raised:
        storage_options(parse_location("uc://nowhere.at_all"), "raw_events")
    assert "set DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET" in str(raised.value)
    assert "DATABRICKS_HOST" not in str(raised.value).partition("set ")[2]


def test_credentials_without_an_expiry_are_kept_for_a_while(
    workspace: FakeWorkspace, clock: Clock
) -> None:
    workspace.vend = lambda _id: {
        "aws_temp_credentials": {"access_key_id": "AKIA", "secret_access_key": "s"}
    }
    tables = tables_of(workspace, clock)
    first = tables.options("raw_events")
    clock.now += unity.UNKNOWN_LIFETIME_S * 0.7
    assert tables.options("raw_events") is first, "not asked again at every use"
    assert len(workspace.vended) == 1
    clock.now += unity.UNKNOWN_LIFETIME_S * 0.1
    tables.options("raw_events")
    assert len(workspace.vended) == 2
