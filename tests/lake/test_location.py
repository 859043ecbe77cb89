"""Tables locations: parsed and refused in one place, with time limits for object stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciolake.errors import ConfigurationError, InputError
from ciolake.lake.location import parse_location, require_location, storage_options
from ciolake.settings import load_settings


@pytest.mark.parametrize(
    ("uri", "scheme", "path"),
    [
        ("data/tables", "file", "data/tables"),
        ("/srv/ciolake/tables/", "file", "/srv/ciolake/tables"),
        ("file:///srv/tables", "file", "/srv/tables"),
        ("s3://bucket/ciolake/tables/", "s3", None),
        ("gs://bucket/tables", "gs", None),
        ("abfss://lake@account.dfs.core.windows.net/tables", "abfss", None),
    ],
)
def test_supported_locations_parse(uri: str, scheme: str, path: str | None) -> None:
    location = parse_location(uri)
    assert location.scheme == scheme
    assert location.path == (None if path is None else Path(path))
    assert not location.uri.endswith("/")
    assert location.table_uri("raw_events") == f"{location.uri}/raw_events"


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3://", "names no bucket"),
        ("s3:///tables", "names no bucket"),
        ("s3:/tables", "not a valid URI"),
        ("foo://x", "unsupported scheme foo://"),
        ("http://example.com/tables", "unsupported scheme http://"),
        ("   ", "blank"),
        ("/", "root directory"),
    ],
)
def test_malformed_locations_are_refused_naming_what_is_supported(uri: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment) as raised:
        parse_location(uri)
    assert "\n" not in str(raised.value)
    if "scheme" in fragment or "valid" in fragment:
        assert "s3://bucket/path" in str(raised.value)


def test_object_stores_get_time_limits_and_local_paths_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CIOLAKE_STORE_TIMEOUT_S", raising=False)
    assert storage_options("data/tables") == {}
    options = storage_options("s3://bucket/tables")
    assert options == {
        "connect_timeout": "5.0s",
        "timeout": "15.0s",
        "retry_timeout": "10.0s",
        "max_retries": "3",
    }
    # A shorter request timeout shortens the others with it.
    monkeypatch.setenv("CIOLAKE_STORE_TIMEOUT_S", "2.5")
    options = storage_options("s3://bucket/tables")
    assert (options["connect_timeout"], options["timeout"], options["retry_timeout"]) == (
        "2.5s",
        "2.5s",
        "2.5s",
    )


@pytest.mark.parametrize("value", ["0", "-1", "601", "soon", "nan"])
def test_a_store_timeout_out_of_range_is_refused_by_every_command(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CIOLAKE_STORE_TIMEOUT_S"):
        load_settings({"CIOLAKE_STORE_TIMEOUT_S": value})


def test_a_reading_command_needs_the_data_directory(tmp_path: Path) -> None:
    require_location(parse_location(str(tmp_path / "tables")))  # not created yet: fine
    require_location(parse_location("s3://bucket/tables"))  # checked when opened
    with pytest.raises(InputError, match="no data directory at"):
        require_location(parse_location(str(tmp_path / "nope" / "tables")))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        require_location(parse_location(str(tmp_path / "file" / "tables")))
    with pytest.raises(InputError, match="is a file"):
        require_location(parse_location(str(tmp_path / "file")))
