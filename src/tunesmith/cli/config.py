"""`tunesmith config`: every config key with its type, default and one-line description."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def config_command(
    section: Optional[str] = typer.Argument(None, help="only keys under this section, e.g. train or method.lora"),
    resolved: Optional[str] = typer.Option(None, "--show", help="print this config file fully resolved (defaults filled in)"),
) -> None:
    """List the config schema, or show a config file with every default filled in."""
    from tunesmith.config.load import describe_fields, dump_config, load_config

    if resolved:
        console.print(dump_config(load_config(resolved)), markup=False)
        return
    table = Table(title="tunesmith config keys")
    for column in ("key", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for key, kind, default, description in describe_fields():
        if section is None or key.startswith(section + ".") or key == section:
            table.add_row(key, kind, default, description)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("config")(config_command)
