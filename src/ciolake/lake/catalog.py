"""Tables in Unity Catalog (``--tables-uri uc://catalog.schema``): where each one lives, and
credentials for it that are renewed before they expire.

delta-rs resolves a ``uc://`` table once, when it is opened, and keeps the credentials it was
given; ciolake runs for days and writes its Parquet files itself, so it resolves the tables
here: each table's storage location once (it does not move), and its temporary credentials
(Unity Catalog's credential vending, scoped to that table's path) again whenever less than a
quarter of their lifetime is left. Callers ask for a table's credentials at every use and
reopen what holds old ones (``lake/writer.py``); obstore asks through a credential provider.

Only external Delta tables: ``ciolake databricks setup`` creates them. A managed table is
Databricks' to write (``--sink zerobus`` lands raw events in one), and a missing one is an
operator's to create; both are refused with the command that fixes them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ciolake.errors import StoreUnavailableError, TableUnreadableError
from ciolake.settings import read_store_timeout

if TYPE_CHECKING:
    from ciolake.databricks.workspace import Catalog, CatalogTable, VendedCredentials

SCHEME = "uc"
# Renewed when less than this share of the credentials' lifetime is left (15 minutes of an hour).
RENEW_WHEN_LEFT = 0.25
# The lifetime assumed of credentials vended without an expiry (or one already past), so that
# they are not asked for again at every use.
UNKNOWN_LIFETIME_S = 900.0


@dataclass(frozen=True, slots=True)
class _Vended:
    options: dict[str, str]
    renew_at: float
    expires_at: float


class UnityTables:
    """The tables of one Unity Catalog schema: their locations and current credentials."""

    def __init__(
        self, catalog: Catalog, schema: str, *, clock: Callable[[], float], host: str = ""
    ) -> None:
        """Args:
        catalog: the workspace's Unity Catalog.
        schema: ``catalog.schema``, where ciolake's tables are.
        clock: seconds since the epoch (the credentials' expiry is in those).
        host: the workspace, for messages.
        """
        self._catalog = catalog
        self._schema = schema
        self._clock = clock
        self._host = host
        self._tables: dict[str, CatalogTable] = {}
        self._credentials: dict[str, _Vended] = {}
        self._lock = threading.Lock()

    def uri(self, name: str) -> str:
        """Where table ``name`` lives (its storage location).

        Raises:
            TableUnreadableError: Unity Catalog has no such external Delta table.
            StoreUnavailableError: the workspace cannot be reached.
        """
        return self._table(name).storage_location.rstrip("/")

    def options(self, name: str) -> dict[str, str]:
        """Object store options holding table ``name``'s current credentials (renewed when
        due; a new dictionary only then, so a caller sees a renewal by comparing).

        Raises:
            TableUnreadableError, StoreUnavailableError: as ``uri``.
        """
        return self._current(name).options

    def credential(self, name: str) -> dict[str, Any]:
        """Table ``name``'s current credentials as obstore's credential providers give
        them, due again when this resolver would renew them."""
        vended = self._current(name)
        options = vended.options
        if "azure_storage_sas_token" in options:
            return {
                "sas_token": options["azure_storage_sas_token"],
                "expires_at": _utc(vended.renew_at),
            }
        return {
            "access_key_id": options["aws_access_key_id"],
            "secret_access_key": options["aws_secret_access_key"],
            "token": options.get("aws_session_token"),
            "expires_at": _utc(vended.renew_at),
        }

    def _table(self, name: str) -> CatalogTable:
        with self._lock:
            known = self._tables.get(name)
        if known is not None:
            return known
        table = self._resolve(name)
        with self._lock:
            self._tables[name] = table
        return table

    def _resolve(self, name: str) -> CatalogTable:
        from ciolake.databricks.workspace import (  # noqa: PLC0415
            TableNotInCatalogError,
            WorkspaceUnavailableError,
        )

        full_name = f"{self._schema}.{name}"
        try:
            table = self._catalog.table(full_name)
        except TableNotInCatalogError as exc:
            raise TableUnreadableError(
                name, f"table {full_name} is not in Unity Catalog ({exc}): {self._create_it()}"
            ) from exc
        except WorkspaceUnavailableError as exc:
            raise self._unreachable(exc) from exc
        if table.table_type != "EXTERNAL" or table.data_source_format != "DELTA":
            raise TableUnreadableError(
                name,
                f"table {full_name} is a {table.table_type} {table.data_source_format} table;"
                f" ciolake writes only to external Delta tables: {self._create_it()}",
            )
        return table

    def _current(self, name: str) -> _Vended:
        now = self._clock()
        with self._lock:
            vended = self._credentials.get(name)
        if vended is not None and now < vended.renew_at:
            return vended
        fresh = self._vend(name, now)
        with self._lock:
            self._credentials[name] = fresh
        return fresh

    def _vend(self, name: str, now: float) -> _Vended:
        from ciolake.databricks.workspace import (  # noqa: PLC0415
            TableNotInCatalogError,
            WorkspaceUnavailableError,
        )

        table = self._table(name)
        try:
            credentials: VendedCredentials = self._catalog.credentials(table.table_id)
        except TableNotInCatalogError as exc:
            raise TableUnreadableError(
                name,
                f"Unity Catalog vends no credentials for {table.full_name} ({exc}): the service"
                " principal needs EXTERNAL USE SCHEMA on the schema, MODIFY and SELECT on the"
                " table, and the metastore external data access",
            ) from exc
        except WorkspaceUnavailableError as exc:
            raise self._unreachable(exc) from exc
        expires_at = credentials.expires_at
        if expires_at <= now:
            expires_at = now + UNKNOWN_LIFETIME_S
        lifetime = expires_at - now
        return _Vended(
            credentials.options,
            renew_at=expires_at - lifetime * RENEW_WHEN_LEFT,
            expires_at=expires_at,
        )

    def _create_it(self) -> str:
        catalog, _, schema = self._schema.partition(".")
        return (
            f"create ciolake's tables with `ciolake databricks setup --catalog {catalog}"
            f" --schema {schema} --location <s3:// or abfss:// path>`"
        )

    def _unreachable(self, exc: BaseException) -> StoreUnavailableError:
        where = f" at {self._host}" if self._host else ""
        return StoreUnavailableError(f"Unity Catalog{where} cannot be reached: {exc}")


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


_RESOLVERS: dict[str, UnityTables] = {}
_RESOLVERS_LOCK = threading.Lock()


def unity_tables(schema: str) -> UnityTables:
    """The process's resolver of schema ``catalog.schema``, signed in as the service principal
    of ``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID`` and ``DATABRICKS_CLIENT_SECRET``.

    One per schema and process, so the tables are resolved and their credentials vended once
    for every command, thread and table object that uses them.

    Raises:
        ConfigurationError: a variable is missing, or the ``databricks`` extra is not installed.
        StoreUnavailableError: the workspace cannot be reached to sign in.
    """
    with _RESOLVERS_LOCK:
        found = _RESOLVERS.get(schema)
        if found is None:
            found = _RESOLVERS[schema] = _signed_in(schema)
        return found


def _signed_in(schema: str) -> UnityTables:
    from ciolake.databricks.workspace import (  # noqa: PLC0415
        WorkspaceUnavailableError,
        connect_catalog,
        service_principal,
    )

    principal = service_principal(os.environ, f"--tables-uri {SCHEME}://{schema}")
    timeout_s = read_store_timeout(os.environ)
    try:
        catalog = connect_catalog(
            host=principal.host,
            client_id=principal.client_id,
            client_secret=principal.client_secret,
            timeout_s=timeout_s,
        )
    except WorkspaceUnavailableError as exc:
        raise StoreUnavailableError(
            f"Unity Catalog at {principal.host} cannot be reached: {exc}"
        ) from exc
    return UnityTables(catalog, schema, clock=time.time, host=principal.host)
