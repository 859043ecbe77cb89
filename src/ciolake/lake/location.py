"""Where the tables live: a local directory or an object store, parsed and checked once.

Every command and the server take the tables location from ``--tables-uri`` (or the data
directory), so a mistyped one is refused here, in one line naming what is supported, instead of
deep inside delta-rs. Every Delta call in ``ciolake.lake`` takes its storage options from
``storage_options``, so every request to an object store has a timeout: a store that accepts
connections and never answers costs seconds, not a hang.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ciolake.errors import InputError
from ciolake.lake.catalog import unity_tables
from ciolake.settings import read_store_timeout

# Object stores delta-rs reaches, by URI scheme (what each needs after the scheme).
REMOTE_SCHEMES: dict[str, str] = {
    "s3": "s3://bucket/path",
    "s3a": "s3a://bucket/path",
    "gs": "gs://bucket/path",
    "az": "az://container/path",
    "abfs": "abfs://container@account.dfs.core.windows.net/path",
    "abfss": "abfss://container@account.dfs.core.windows.net/path",
    # Unity Catalog's external tables, through credential vending (``lake/catalog.py``).
    "uc": "uc://catalog.schema",
}
SUPPORTED = "a local path, file:///path, " + ", ".join(REMOTE_SCHEMES.values())

# Client options of object_store (ClientConfigKey) and delta-rs's retry options. A request
# that gets no answer gives up after the request timeout (``settings.read_store_timeout``); a
# failed one is retried (connection reset, 503) only while RETRY_TIMEOUT_S has not passed since
# the first attempt, so an endpoint that never answers costs one request timeout, not
# delta-rs's default of 10 retries.
CONNECT_TIMEOUT_S = 5.0
RETRY_TIMEOUT_S = 10.0
MAX_RETRIES = "3"

_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_CATALOG_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class TablesLocation:
    """A parsed tables location.

    Attributes:
        uri: the location without a trailing slash, as delta-rs is given it.
        scheme: ``file`` for a local directory, else the object store's scheme.
        path: the local directory, or None for an object store.
    """

    uri: str
    scheme: str
    path: Path | None

    @property
    def remote(self) -> bool:
        """Whether the tables are in an object store."""
        return self.path is None

    @property
    def catalog_schema(self) -> str | None:
        """``catalog.schema`` for tables in Unity Catalog, else None."""
        return self.uri.removeprefix("uc://") if self.scheme == "uc" else None

    def table_uri(self, name: str) -> str:
        """Where table ``name`` lives.

        Raises:
            TableUnreadableError, StoreUnavailableError, ConfigurationError: Unity Catalog
                cannot say (``lake/catalog.py``).
        """
        schema = self.catalog_schema
        if schema is not None:
            return unity_tables(schema).uri(name)
        return f"{self.uri}/{name}"


def parse_location(uri: str) -> TablesLocation:
    """Parse and check a tables location.

    Raises:
        InputError: the location is blank, has an unsupported scheme, or names no bucket
            or container.
    """
    text = uri.strip()
    if not text:
        raise InputError(f"the tables location is blank: use {SUPPORTED}")
    if "://" not in text:
        if _SCHEME_LIKE.match(text):
            raise InputError(f"tables location {uri!r} is not a valid URI: use {SUPPORTED}")
        return _local(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _local(text.removeprefix(parts.scheme + "://"))
    example = REMOTE_SCHEMES.get(scheme)
    if example is None:
        raise InputError(
            f"tables location {uri!r}: unsupported scheme {parts.scheme}://; use {SUPPORTED}"
        )
    if scheme == "uc":
        return _catalog_schema(uri, parts.netloc, parts.path)
    if not parts.netloc or parts.netloc.startswith("@"):
        raise InputError(f"tables location {uri!r} names no bucket or container: use {example}")
    return TablesLocation(text.rstrip("/"), scheme, None)


def _catalog_schema(uri: str, netloc: str, path: str) -> TablesLocation:
    if path.strip("/") or not _CATALOG_SCHEMA.match(netloc):
        raise InputError(
            f"tables location {uri!r}: name a Unity Catalog schema as uc://catalog.schema"
            " (letters, digits and underscores)"
        )
    return TablesLocation(f"uc://{netloc}", "uc", None)


def _local(text: str) -> TablesLocation:
    if not text.strip("/"):
        # Tables straight under / would mix with the system's directories.
        raise InputError(f"tables location {text!r} is the root directory: use a directory")
    path = Path(text)
    return TablesLocation(str(path), "file", path)


def storage_options(location: TablesLocation | str, name: str | None = None) -> dict[str, str]:
    """The delta-rs storage options for a call on table ``name`` under ``location``.

    Local tables need none; object stores get their time limits (see the module), and tables
    in Unity Catalog their current credentials as well (``name`` is required for those: a
    caller that keeps a table open compares the options at each use and reopens it when they
    changed).

    Raises:
        TableUnreadableError, StoreUnavailableError, ConfigurationError: Unity Catalog
            cannot vend the credentials (``lake/catalog.py``).
    """
    parsed = parse_location(location) if isinstance(location, str) else location
    if not parsed.remote:
        return {}
    limits = store_time_limits()
    options = {
        "connect_timeout": f"{limits.connect_s}s",
        "timeout": f"{limits.request_s}s",
        "retry_timeout": f"{limits.retry_s}s",
        "max_retries": MAX_RETRIES,
    }
    schema = parsed.catalog_schema
    if schema is None:
        return options
    if name is None:
        raise ValueError("storage options of a Unity Catalog table need its name")
    return options | unity_tables(schema).options(name)


@dataclass(frozen=True, slots=True)
class StoreTimeLimits:
    """Seconds an object store request may take: to connect, to answer, to be retried."""

    connect_s: float
    request_s: float
    retry_s: float


def store_time_limits() -> StoreTimeLimits:
    """The object store time limits: the request timeout (``CIOLAKE_STORE_TIMEOUT_S``,
    default 15 s), the others no longer than it.

    Read from the environment where the storage options are made, as object_store reads its
    own ``AWS_*`` variables, so that every command and process agrees without passing it
    along; ``load_settings`` refuses a bad value at the start of every command.

    Raises:
        ConfigurationError: the variable is not a number of seconds from 0.1 to 600.
    """
    seconds = read_store_timeout(os.environ)
    return StoreTimeLimits(min(CONNECT_TIMEOUT_S, seconds), seconds, min(RETRY_TIMEOUT_S, seconds))


def require_location(location: TablesLocation) -> None:
    """Check that a local location's directory, or the data directory it would be made in,
    exists: a command reading tables was pointed at the right place.

    A location inside an existing directory that has no tables yet is fine (the receiver
    creates them on its first start); object stores are checked when their tables are opened.

    Raises:
        InputError: the directory and its parent are missing, or one of them is a file.
    """
    path = location.path
    if path is None or path.is_dir():
        return
    if path.exists():
        raise InputError(f"{path} is a file, not a tables directory: pass the right --data-dir")
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise InputError(f"{parent} is a file, not a data directory: pass the right --data-dir")
    raise InputError(
        f"no data directory at {parent} (for tables at {path}): pass the --data-dir (or"
        " --tables-uri) that ciolake serve writes to"
    )
