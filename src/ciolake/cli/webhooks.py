"""``ciolake webhooks``: manage the Customer.io reporting webhooks that feed ciolake.

Thin over ``ciolake.customerio.client``. Every input is checked (event names, endpoint scheme,
the file of ``ensure``) before the first request, each request waits at most ``--timeout``, and
every failure ends in one line on stderr and a non-zero exit: 1 when the App API refused, could
not be reached or answered something unexpected, 2 when the input or the configuration is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from ciolake.cli.app import TYPER_SETTINGS
from ciolake.cli.app_api import (
    DEFAULT_TIMEOUT_S,
    AllowHttpOption,
    BaseUrlOption,
    Region,
    RegionOption,
    TimeoutOption,
    cli_errors,
    open_client,
)
from ciolake.customerio.client import (
    API_KEY_ENV,
    AppApiClient,
    ReportingWebhook,
)
from ciolake.customerio.events_catalog import GROUPS, summarize_events
from ciolake.customerio.plan import (
    Change,
    Desired,
    WebhookSpecError,
    build_desired,
    find_existing,
    plan,
)

app = typer.Typer(
    name="webhooks",
    help=(
        "Manage Customer.io reporting webhooks through the App API. "
        f"The App API key is read from {API_KEY_ENV}. "
        "Exit status: 0 ok, 1 the API refused or could not be reached, 2 bad input or settings."
    ),
    no_args_is_help=True,
    **TYPER_SETTINGS,
)

# What click reads as an unknown short option where an id belongs: ``get -5``.
_NEGATIVE_NUMBER = re.compile(r"-\d+")


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _not_an_id(value: str) -> typer.BadParameter:
    return typer.BadParameter(
        f"{value} is not a webhook id: an id is a positive integer, as `ciolake webhooks list` "
        "shows",
        param_hint="'WEBHOOK_ID'",
    )


def _check_id(value: int) -> int:
    if value < 1:
        raise _not_an_id(str(value))
    return value


class IdCommand(TyperCommand):
    """A command taking a webhook id, which explains ``-5`` instead of "No such option: -5"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse as usual, but answer a negative id as a bad id rather than an unknown option."""
        given = list(args)  # the parser consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            # typer's vendored click is private: its NoSuchOption is known by name, not imported.
            option = str(getattr(exc, "option_name", ""))
            if type(exc).__name__ != "NoSuchOption" or not _NEGATIVE_NUMBER.match(option):
                raise
            # Click names the first short option of a cluster ("-1" of "-12"): show the token.
            negatives = (a for a in given if _NEGATIVE_NUMBER.fullmatch(a) and a.startswith(option))
            token = next(negatives, option)
            error = _not_an_id(token)
            error.ctx = ctx
            raise error from None


IdArgument = Annotated[
    int,
    typer.Argument(
        help="The webhook id, a positive integer (see `ciolake webhooks list`).",
        callback=_check_id,
    ),
]
NameOption = Annotated[str | None, typer.Option("--name", help="The webhook's name.")]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint", help="The https URL Customer.io posts events to.")
]
EventsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--events",
        help=(
            "Event names (email_opened), channel groups "
            f"({', '.join(GROUPS)}) or 'all'; comma-separated and/or repeated."
        ),
    ),
]
FullResolutionOption = Annotated[
    bool | None,
    typer.Option(
        "--full-resolution/--no-full-resolution",
        help="Send every open and click, not only the first (unique) ones.",
    ),
]
WithContentOption = Annotated[
    bool | None,
    typer.Option(
        "--with-content/--no-with-content", help="Include message bodies in _sent events."
    ),
]
DisabledOption = Annotated[
    bool | None,
    typer.Option("--disabled/--enabled", help="Pause (or resume) sending to the endpoint."),
]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="TOML file describing the webhook; flags override its values."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the difference without applying it.")
]


# Commands ----------------------------------------------------------------------------------------


@app.command("list")
def list_webhooks(
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """List the workspace's reporting webhooks."""
    with cli_errors(), open_client(region, base_url, allow_http, timeout) as api:
        webhooks = api.reporting_webhooks.list()
    if as_json:
        _print_json([_to_json(hook) for hook in webhooks])
    else:
        _print_table(webhooks)


@app.command("get", cls=IdCommand)
def get_webhook(
    webhook_id: IdArgument,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Show one reporting webhook."""
    with cli_errors(), open_client(region, base_url, allow_http, timeout) as api:
        webhook = api.reporting_webhooks.get(webhook_id)
    if as_json:
        _print_json(_to_json(webhook))
    else:
        _print_details(webhook)


@app.command("create")
def create_webhook(
    name: NameOption = None,
    endpoint: EndpointOption = None,
    events: EventsOption = None,
    full_resolution: FullResolutionOption = None,
    with_content: WithContentOption = None,
    disabled: DisabledOption = None,
    file: FileOption = None,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Create a reporting webhook (always a new one; `ensure` creates only if missing)."""
    with cli_errors():
        desired = build_desired(
            file=file,
            name=name,
            endpoint=endpoint,
            events=events,
            disabled=disabled,
            full_resolution=full_resolution,
            with_content=with_content,
            allow_http=allow_http,
        )
        target, changes = plan(None, desired)
        with open_client(region, base_url, allow_http, timeout) as api:
            created = api.reporting_webhooks.create(target)
    _report("created", created, changes, dry_run=False, as_json=as_json)


@app.command("update", cls=IdCommand)
def update_webhook(
    webhook_id: IdArgument,
    name: NameOption = None,
    endpoint: EndpointOption = None,
    events: EventsOption = None,
    full_resolution: FullResolutionOption = None,
    with_content: WithContentOption = None,
    disabled: DisabledOption = None,
    dry_run: DryRunOption = False,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Change the given fields of a webhook; the others keep their values."""
    with cli_errors():
        desired = build_desired(
            name=name,
            endpoint=endpoint,
            events=events,
            disabled=disabled,
            full_resolution=full_resolution,
            with_content=with_content,
            allow_http=allow_http,
        )
        if not desired.given():
            raise WebhookSpecError("nothing to update: give at least one field to change")
        with open_client(region, base_url, allow_http, timeout) as api:
            _converge(api, api.reporting_webhooks.get(webhook_id), desired, dry_run, as_json)


@app.command("delete", cls=IdCommand)
def delete_webhook(
    webhook_id: IdArgument,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Delete a reporting webhook: Customer.io stops sending to its endpoint."""
    with cli_errors(), open_client(region, base_url, allow_http, timeout) as api:
        api.reporting_webhooks.delete(webhook_id)
    if as_json:
        _print_json({"action": "deleted", "id": webhook_id})
    else:
        Console().print(Text(f"Deleted reporting webhook {webhook_id}."))


@app.command("enable", cls=IdCommand)
def enable_webhook(
    webhook_id: IdArgument,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Resume sending events to a webhook's endpoint."""
    _set_disabled(webhook_id, False, region, base_url, allow_http, timeout, as_json)


@app.command("disable", cls=IdCommand)
def disable_webhook(
    webhook_id: IdArgument,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Pause sending events to a webhook's endpoint (the webhook is kept)."""
    _set_disabled(webhook_id, True, region, base_url, allow_http, timeout, as_json)


@app.command("ensure")
def ensure_webhook(
    name: NameOption = None,
    endpoint: EndpointOption = None,
    events: EventsOption = None,
    full_resolution: FullResolutionOption = None,
    with_content: WithContentOption = None,
    disabled: DisabledOption = None,
    file: FileOption = None,
    dry_run: DryRunOption = False,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Make the webhook look as described: create it, or change only what differs.

    The webhook is found by --name, else by --endpoint. Fields not given (on the command line
    or in --file) keep their current values. Running it again changes nothing.
    """
    with cli_errors():
        desired = build_desired(
            file=file,
            name=name,
            endpoint=endpoint,
            events=events,
            disabled=disabled,
            full_resolution=full_resolution,
            with_content=with_content,
            allow_http=allow_http,
        )
        missing = [f for f in ("name", "endpoint", "events") if getattr(desired, f) is None]
        if missing:
            listed = ", ".join(f"--{f}" for f in missing)
            raise WebhookSpecError(f"ensure needs {listed} (as flags or in --file)")
        with open_client(region, base_url, allow_http, timeout) as api:
            current = find_existing(api.reporting_webhooks.list(), desired)
            _converge(api, current, desired, dry_run, as_json)


# Helpers -----------------------------------------------------------------------------------------


def _set_disabled(
    webhook_id: int,
    disabled: bool,
    region: Region,
    base_url: str | None,
    allow_http: bool,
    timeout: float,
    as_json: bool,
) -> None:
    with cli_errors(), open_client(region, base_url, allow_http, timeout) as api:
        current = api.reporting_webhooks.get(webhook_id)
        _converge(api, current, Desired(disabled=disabled), False, as_json)


def _converge(
    api: AppApiClient,
    current: ReportingWebhook | None,
    desired: Desired,
    dry_run: bool,
    as_json: bool,
) -> None:
    target, changes = plan(current, desired)
    result = current if current is not None else target
    if current is None:
        action = "created"
        if not dry_run:
            result = api.reporting_webhooks.create(target)
    elif changes:
        action = "updated"
        if not dry_run:
            assert current.id is not None, "webhooks read from the API carry an id"
            result = api.reporting_webhooks.update(current.id, target)
    else:
        action = "unchanged"
    _report(action, result, changes, dry_run=dry_run, as_json=as_json)


# Output ------------------------------------------------------------------------------------------


def _to_json(webhook: ReportingWebhook) -> dict[str, Any]:
    value = msgspec.to_builtins(webhook)
    assert isinstance(value, dict)
    return value


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def _events_text(events: Sequence[str]) -> str:
    return f"{', '.join(summarize_events(events))} ({len(events)})"


def _events_by_group(events: Sequence[str]) -> str:
    """One line per group: ``email: all 14`` or ``sms: replied, sent``; unknown names last."""
    remaining = set(events)
    lines = []
    for group, members in GROUPS.items():
        chosen = remaining & members
        remaining -= chosen
        if chosen == members:
            lines.append(f"{group}: all {len(members)}")
        elif chosen:
            metrics = sorted(name.removeprefix(f"{group}_") for name in chosen)
            lines.append(f"{group}: {', '.join(metrics)}")
    if remaining:
        lines.append(f"other: {', '.join(sorted(remaining))}")
    return "\n".join(lines)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _print_table(webhooks: Sequence[ReportingWebhook]) -> None:
    table = Table(title="Reporting webhooks", title_justify="left")
    for header in ("ID", "Name", "Endpoint", "Events", "Status", "Full res.", "Content", "Type"):
        table.add_column(header, overflow="fold")
    for hook in webhooks:
        table.add_row(
            *(
                Text(cell)
                for cell in (
                    str(hook.id),
                    hook.name,
                    hook.endpoint,
                    _events_text(hook.events),
                    "disabled" if hook.disabled else "enabled",
                    _yes_no(hook.full_resolution),
                    _yes_no(hook.with_content),
                    hook.type or "",
                )
            )
        )
    console = Console()
    if webhooks:
        console.print(table)
    else:
        console.print(Text("No reporting webhooks."))


def _print_details(webhook: ReportingWebhook) -> None:
    table = Table(show_header=False, title=f"Reporting webhook {webhook.id}", title_justify="left")
    table.add_column("Field", style="bold")
    table.add_column("Value", overflow="fold")
    rows = {
        "id": str(webhook.id),
        "name": webhook.name,
        "endpoint": webhook.endpoint,
        "type": webhook.type or "",
        "status": "disabled" if webhook.disabled else "enabled",
        "full_resolution": _yes_no(webhook.full_resolution),
        "with_content": _yes_no(webhook.with_content),
        "events": _events_text(webhook.events),
        "event names": _events_by_group(webhook.events),
    }
    for field, value in rows.items():
        table.add_row(Text(field), Text(value))
    Console().print(table)


def _format_value(field: str, value: Any) -> str:
    if value is None:
        return ""
    if field == "events":
        return _events_text(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _change_text(change: Change) -> str:
    if change.field == "events" and change.before is not None:
        added = sorted(set(change.after) - set(change.before))
        removed = sorted(set(change.before) - set(change.after))
        parts = []
        if added:
            parts.append(f"added: {', '.join(summarize_events(added))}")
        if removed:
            parts.append(f"removed: {', '.join(summarize_events(removed))}")
        return "\n".join(parts)
    after = _format_value(change.field, change.after)
    if change.before is None:
        return after
    return f"{_format_value(change.field, change.before)} -> {after}"


def _change_json(change: Change) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "field": change.field,
        "before": list(change.before) if isinstance(change.before, tuple) else change.before,
        "after": list(change.after) if isinstance(change.after, tuple) else change.after,
    }
    if change.field == "events":
        before = set(change.before or ())
        entry["added"] = sorted(set(change.after) - before)
        entry["removed"] = sorted(before - set(change.after))
    return entry


def _report(
    action: str, webhook: ReportingWebhook, changes: list[Change], *, dry_run: bool, as_json: bool
) -> None:
    if as_json:
        _print_json(
            {
                "action": action,
                "dry_run": dry_run,
                "changes": [_change_json(change) for change in changes],
                "webhook": _to_json(webhook),
            }
        )
        return
    console = Console()
    label = f"reporting webhook {webhook.id} {webhook.name!r}"
    if webhook.id is None:
        label = f"reporting webhook {webhook.name!r}"
    if action == "unchanged":
        console.print(Text(f"{label[0].upper()}{label[1:]} is up to date: nothing changed."))
        return
    verb = {"created": "create", "updated": "update"}[action]
    heading = f"Dry run: would {verb} {label}:" if dry_run else f"{action.capitalize()} {label}:"
    table = Table()
    table.add_column("Field", style="bold")
    table.add_column("Change", overflow="fold")
    for change in changes:
        table.add_row(Text(change.field), Text(_change_text(change)))
    console.print(Text(heading))
    console.print(table)


__all__ = ["Region", "app"]
