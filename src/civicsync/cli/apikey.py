"""CLI commands for the HTTP API's keys: `apikey create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from civicsync.api.keys import SCOPES, create_key, list_keys, revoke_key
from civicsync.cli.common import ConfigOpt, JsonOpt, err, load, out, user_errors

apikey_app = typer.Typer(help="API keys of the HTTP API: create, list, revoke.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `apikey` command group to the CLI."""
    app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="A name for the key (unique among keys in force).")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help=f"Repeatable; one of {', '.join(SCOPES)}.")],
    client: Annotated[str | None, typer.Option(
        help="The API client the key speaks for (default: NAME); keys of one client share its alert ids.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a key and print it once: only its hash is stored, it cannot be shown again."""
    with user_errors():
        key, record = create_key(load(config), name, scope, client)
    if as_json:
        out.print_json(data={**record.as_dict(), "key": key})
        return
    out.print(f"key [bold]{record.name}[/] (id {record.key_id}, client {record.client}, "
              f"scopes {', '.join(record.scopes)}):", highlight=False)
    out.print(key, highlight=False, soft_wrap=True)
    err.print("store it now: it is not shown again", highlight=False)


@apikey_app.command("list")
def apikey_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List every key (never the keys themselves), revoked ones included."""
    with user_errors():
        keys = list_keys(load(config))
    if as_json:
        out.print_json(data=[k.as_dict() for k in keys])
        return
    table = Table("id", "name", "client", "scopes", "created (UTC)", "revoked (UTC)")
    for k in keys:
        table.add_row(k.key_id, k.name, k.client, ", ".join(k.scopes), k.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "")
    out.print(table)
    if not keys:
        out.print("no API keys")


@apikey_app.command("revoke")
def apikey_revoke(name_or_id: Annotated[str, typer.Argument(help="The key's name or id.")],
                  config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    with user_errors():
        record = revoke_key(load(config), name_or_id)
    if as_json:
        out.print_json(data=record.as_dict())
        return
    out.print(f"revoked key {record.name} (id {record.key_id})", highlight=False)
