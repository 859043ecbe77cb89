"""What the commands that call Customer.io's App API share: its options, the client built
from them, and the one-line answer to each failure (exit 1: the API refused, could not be
reached or answered something unexpected; 2: the input or the configuration is wrong)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, NoReturn

import typer

from ciolake.customerio.client import (
    API_KEY_ENV,
    ApiConnectionError,
    ApiTimeoutError,
    AppApiClient,
    AppApiError,
    AuthenticationError,
    UnexpectedResponseError,
)
from ciolake.errors import CiolakeError, TerminalError

EXIT_API = 1
EXIT_INPUT = 2
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 600.0


class Region(StrEnum):
    """Customer.io data centers."""

    us = "us"
    eu = "eu"


RegionOption = Annotated[
    Region,
    typer.Option(
        "--region", envvar="CIOLAKE_CIO_REGION", help="Data center of the Customer.io workspace."
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="App API base URL; overrides --region (a proxy, a test)."),
]
AllowHttpOption = Annotated[
    bool,
    typer.Option("--allow-http", help="Accept a plain-http endpoint or base URL (testing only)."),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.1,
        max=MAX_TIMEOUT_S,
        help="Seconds to wait for the App API to connect, and then to answer each request.",
    ),
]


def open_client(
    region: Region, base_url: str | None, allow_http: bool, timeout: float
) -> AppApiClient:
    """A client with the key from the environment, for the chosen region or base URL."""
    return AppApiClient.from_env(
        os.environ, region=region.value, base_url=base_url, allow_http=allow_http, timeout_s=timeout
    )


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn ciolake errors into one line on stderr and an exit status."""
    try:
        yield
    except AuthenticationError as exc:
        fail(f"{exc} (check {API_KEY_ENV} and --region)", EXIT_API)
    except ApiTimeoutError as exc:
        hint = "check --base-url or --region and the network; --timeout waits longer"
        fail(f"{exc} ({hint})", EXIT_API)
    except ApiConnectionError as exc:
        fail(f"{exc} (check --base-url or --region and the network)", EXIT_API)
    except UnexpectedResponseError as exc:
        fail(f"{exc} (check that --base-url, if given, is the App API)", EXIT_API)
    except AppApiError as exc:
        fail(str(exc), EXIT_API)
    except TerminalError as exc:
        fail(str(exc), EXIT_INPUT)
    except CiolakeError as exc:
        fail(str(exc), EXIT_API)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` on one line and exit with ``code``."""
    # One line, whatever the message carries (a multi-line TOML or decoding error).
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)
