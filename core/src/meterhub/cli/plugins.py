"""``meterhub plugins``: what is installed."""

from __future__ import annotations

import click

from .. import jsonout
from .common import _plugins, _user_errors


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def plugins_cmd(as_json: bool) -> None:
    """List every plugin with its distribution, version and hooks."""
    from . import MeterhubGroup

    plugins = _plugins()
    root = click.get_current_context().find_root().command
    if isinstance(root, MeterhubGroup):  # so that a meterhub_register_commands that fails is listed
        root.add_plugin_commands()
    with _user_errors():
        infos = plugins.info()
    rows = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "hooks": list(i.hooks),
            "status": "disabled" if i.disabled else "failed" if i.error else "ok",
            "error": i.error,
        }
        for i in infos
    ]
    if as_json:
        click.echo(jsonout.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="meterhub plugins")
    for col in ("name", "distribution", "version", "hooks", "status"):
        table.add_column(col)
    for r in rows:
        status = r["status"] if not r["error"] else f"failed: {r['error']}"
        table.add_row(r["name"], r["distribution"], r["version"], "\n".join(r["hooks"]), status)
    Console().print(table)
    drivers = plugins.meter_drivers()
    transports = plugins.transports()
    click.echo(f"protocols: {', '.join(sorted(drivers)) or 'none'}")
    click.echo(f"transports: {', '.join(sorted(transports)) or 'none'}")
