"""``meterhub bill``: a meter's bill for a month, from its frozen readings in the store and
its tariff (:mod:`meterhub.billing`)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import attrs
import click

from .. import jsonout
from .common import EXIT_USAGE, Failure, _plugins, _user_errors, open_existing_store
from .export import MeterFilter, _terminal_name

if TYPE_CHECKING:
    from ..billing import BillingSetup
    from ..model import Meter


@click.command("bill")
@click.option("--meter", required=True, metavar="METER",
              help="The meter: its address, PROTOCOL:ADDRESS or CHANNEL/PROTOCOL:ADDRESS (as `export` names it), its "
                   "name in the site file with --site, or a head-end's measuring point number with --terminal.")
@click.option("--period", required=True, metavar="YYYY-MM", help="The month billed, e.g. 2026-10.")
@click.option("--db", "db", default=None,
              help="The store: a SQLite file written by meterhub, or its URL (sqlite:///FILE, postgresql://...). "
                   "Default: the site file's store with --site, else meterhub.db.")
@click.option("--site", "site_file", default=None, type=click.Path(dir_okay=False),
              help="Take the tariffs, the meter's tariff, the time zone and the freeze times from this site file "
                   "instead of what `meterhub run` kept in the store.")
@click.option("--tariffs", "tariffs_file", default=None, type=click.Path(dir_okay=False),
              help="A YAML file with a tariffs: section to price with (a head-end has no site file); needs --tariff.")
@click.option("--tariff", "tariff_name", default=None, metavar="NAME",
              help="Bill with this tariff instead of the one assigned to the meter.")
@click.option("--timezone", default=None, metavar="ZONE",
              help="The IANA zone of the freezes (Asia/Shanghai). Default: the site's, else this machine's.")
@click.option("--terminal", default=None,
              help="The concentrator whose meter it is (a head-end's store: 32010001 or 3201/1); --meter is then "
                   "its measuring point number.")
@click.option("--protocol", default=None, help="The meter's protocol, where meters of several share its address.")
@click.option("--channel", default=None, help="The meter's channel, where meters on several share its address.")
@click.option("--rollover", default=None, metavar="VALUE",
              help="Where the registers wrap to zero (1000000 for six integer digits): a register lower at the end "
                   "than at the start has rolled over instead of being an error.")
@click.option("--json", "as_json", is_flag=True, help="The bill as JSON on stdout, every figure exact.")
def bill_cmd(meter: str, period: str, db: str | None, site_file: str | None, tariffs_file: str | None,
             tariff_name: str | None, timezone: str | None, terminal: str | None, protocol: str | None,
             channel: str | None, rollover: str | None, as_json: bool) -> None:
    """A meter's bill for a month, from its frozen readings and its tariff, every line explained.

    The month runs from the monthly freeze on its settlement day to the next one. Without
    --site or --tariffs, the tariffs, the meter's tariff, the time zone and the freeze
    times are those `meterhub run` kept in the store. With --json, the bill's meter,
    period, tariff, commodity, currency, registers (the frozen values used: edge,
    quantity, value, unit, boundary, read, backfilled), notes, lines (description,
    quantity, unit, price, amount, basis) and total.
    """
    from ..billing import BILLING_SCOPE, bill_meter, parse_period, resolve_meter, setup_from_settings

    try:
        parse_period(period)
    except ValueError as exc:
        raise Failure(f"--period: {exc}", EXIT_USAGE) from None
    if tariffs_file is not None and site_file is not None:
        raise Failure("give --site or --tariffs, not both", EXIT_USAGE)
    if tariffs_file is not None and tariff_name is None:
        raise Failure(f"--tariffs {tariffs_file}: name the tariff to bill with (--tariff NAME)", EXIT_USAGE)
    limit = _rollover(rollover)
    zone = _zone(timezone) if timezone is not None else None
    terminal_name = _terminal_name(terminal) if terminal else None
    site_meter: Meter | None = None
    setup: BillingSetup | None = None
    if site_file is not None:
        site, setup = _site_setup(site_file)
        site_meter = _site_meter(site, meter)
        db = db or site.store
    elif tariffs_file is not None:
        setup = _file_setup(tariffs_file)
    if site_meter is not None:
        wanted = MeterFilter(site_meter.address, site_meter.protocol, site_meter.channel, meter)
    else:
        wanted = MeterFilter.parse(meter, protocol=protocol, channel=channel)
    with open_existing_store(db or "meterhub.db") as store, _user_errors():
        if setup is None:
            kept = store.settings(BILLING_SCOPE)
            if not kept:
                raise Failure(f"the store {db or 'meterhub.db'} keeps no billing settings (`meterhub run` keeps the "
                              "site file's); give --site SITE, or --tariffs FILE --tariff NAME")
            try:
                setup = setup_from_settings(kept, _plugins().tariff_schemes())
            except ValueError as exc:
                raise Failure(f"the store's billing settings: {exc}") from None
        if zone is not None:
            setup = attrs.evolve(setup, zone=zone)
        identity = resolve_meter(store, wanted.address or meter, protocol=wanted.protocol, channel=wanted.channel)
        name = tariff_name or setup.tariff_of(identity.key)
        if not name:
            known = ", ".join(sorted(setup.tariffs)) or "none"
            raise Failure(f"meter {identity.key} has no tariff assigned; give --tariff NAME (known: {known})")
        if name not in setup.tariffs:
            known = ", ".join(sorted(setup.tariffs)) or "none"
            raise Failure(f"no tariff {name!r} (known: {known})", EXIT_USAGE if tariff_name else 1)
        label = (site_meter.name or site_meter.key) if site_meter is not None else ""
        bill = bill_meter(store, setup.tariffs[name], meter=identity.meter, period=period, zone=setup.zone,
                          daily=setup.daily, settlement_day=setup.settlement_day, protocol=identity.protocol,
                          channel=identity.channel, terminal=terminal_name, rollover=limit, label=label)
    if as_json:
        click.echo(jsonout.dumps(bill.as_dict(), indent=2))
    else:
        click.echo(bill.render())


def _rollover(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise Failure(f"--rollover {text!r}: expected a positive number, e.g. 1000000", EXIT_USAGE)
    return value


def _zone(name: str) -> Any:
    from ..billing import zone_named

    try:
        return zone_named(name, "--timezone")
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None


def _site_setup(path: str) -> tuple[Any, BillingSetup]:
    from ..billing import setup_from_site
    from ..config import load_site

    plugins = _plugins()
    with _user_errors():
        site = load_site(path, drivers=plugins.meter_drivers(), transports=plugins.transports(),
                         uplinks=plugins.uplinks())
    try:
        return site, setup_from_site(site)
    except ValueError as exc:
        raise Failure(f"{path}: {exc}", EXIT_USAGE) from None


def _site_meter(site: Any, text: str) -> Meter | None:
    from ..billing import find_site_meter

    with _user_errors():
        return find_site_meter(site.meters, text)


def _file_setup(path: str) -> BillingSetup:
    """The tariffs of a YAML file's ``tariffs:`` section, on this machine's zone and the
    default freeze times (00:00, the 1st)."""
    import yaml

    from ..billing import BillingSetup
    from ..model import local_zone
    from ..tariffs import tariffs_from_config

    try:
        with open(path, encoding="utf-8-sig") as file:
            document = yaml.safe_load(file)
    except OSError as exc:
        raise Failure(f"--tariffs {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise Failure(f"{path}{line}: not YAML ({getattr(exc, 'problem', None) or exc})", EXIT_USAGE) from None
    if not isinstance(document, dict) or "tariffs" not in document:
        raise Failure(f"{path}: no tariffs: section", EXIT_USAGE)
    try:
        tariffs = tariffs_from_config(document["tariffs"], _plugins().tariff_schemes())
    except ValueError as exc:
        raise Failure(f"{path}: {exc}", EXIT_USAGE) from None
    return BillingSetup(zone=local_zone(), tariffs=tariffs)
