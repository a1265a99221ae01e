"""``meterhub gprs``: a loopback master station and a simulated modem, for trying the
Q/GDW 1376.1 uplink without a cellular network or a utility's head-end."""

from __future__ import annotations

import time

import click


@click.group("gprs")
def gprs_cmd() -> None:
    """The Q/GDW 1376.1 uplink's test tools (meterhub-gprs)."""


@gprs_cmd.command("master")
@click.option("--listen", default="127.0.0.1:4001", show_default=True, help="HOST:PORT to accept concentrators on.")
@click.option("--allow", "allow", multiple=True, metavar="TERMINAL",
              help="Confirm only these terminals (AREA/ADDRESS, e.g. 3201/1, or 8 hex digits); repeatable.")
@click.option("--poll", "poll_s", type=float, default=None, metavar="SECONDS",
              help="Ask every online terminal for the energy (AFN 0C F129) of each measuring point this often.")
@click.option("--heartbeat", "heartbeat_s", type=float, default=900.0, show_default=True,
              help="Expected heartbeat period; a terminal silent for three is dropped.")
def master_cmd(listen: str, allow: tuple[str, ...], poll_s: float | None, heartbeat_s: float) -> None:
    """A small master station: confirms logins, heartbeats and reports, logs them, and
    with --poll reads every terminal's points. Not a head-end: nothing is stored."""
    from meterhub.headend.station import serve

    try:
        serve(listen, allow or None, poll_s, heartbeat_s=heartbeat_s)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None


@gprs_cmd.command("modem-sim")
@click.option("--model", default="EC20", show_default=True, help="SIM800, SIM7600, M26, EC20 or EC25.")
@click.option("--fault", "faults", multiple=True, metavar="NAME",
              help="Start with a fault switched on (no_sim, sim_pin, no_network, slow, garbage_urcs, ...); repeatable.")
@click.option("--pin", default="1234", show_default=True, help="The simulated SIM's PIN.")
def modem_sim_cmd(model: str, faults: tuple[str, ...], pin: str) -> None:
    """A simulated cellular modem on a pseudo-terminal whose TCP connections are real
    (to 127.0.0.1, normally): give its path as the uplink's modem port."""
    from .modem_sim import ModemSim

    try:
        sim = ModemSim(model, faults=list(faults), pin=pin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with sim:
        click.echo(f"{sim.model} modem on {sim.path} (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
