"""Tables locations: parsed and refused in one place, with time limits for object stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciolake.errors import InputError
from ciolake.lake.location import parse_location, require_location, storage_options


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


def test_object_stores_get_time_limits_and_local_paths_none() -> None:
    assert storage_options("data/tables") == {}
    options = storage_options("s3://bucket/tables")
    assert {"connect_timeout", "timeout", "retry_timeout", "max_retries"} <= options.keys()


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
