"""Hook specifications: the whole contract between meterhub and its plugins.

Three families, as the product promises, plus observers:

* meter hooks register meter protocol drivers, device profiles, quantities and simulators;
* collector hooks register transports (how frames reach meters over a medium);
* uplink hooks register uplink drivers to a master station;
* observers see readings, events and commands, and may add CLI subcommands.

Registration hooks receive a ``register`` callable and call it once per thing they
provide (the simonw/llm style), so a plugin can provide any number of them. Built-in
drivers use these very hooks (see ``meterhub.default_plugins``).
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "meterhub"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- meter hooks -------------------------------------------------------------------


@hookspec
def meterhub_register_meter_drivers(register: Any) -> None:
    """Register meter protocol drivers.

    Called once, when the plugin manager first builds its driver registry (at the first
    ``meterhub`` command or runtime start). Call ``register(driver)`` for each object
    implementing :class:`meterhub.api.MeterDriver`; its ``name`` is what a site file
    writes as ``protocol:``. Registering a name another plugin already took is reported
    as that plugin's failure and the second driver is ignored. Return nothing.
    """


@hookspec
def meterhub_register_profiles(register: Any) -> None:
    """Register device profiles: data describing one vendor model for a protocol.

    Called once, after the meter drivers are registered. Call
    ``register(protocol, name, profile)`` where ``protocol`` is a driver name, ``name``
    is the profile's lower-case ``vendor-model`` and ``profile`` is a mapping the
    protocol's driver understands (for DL/T 645: extra data identifiers per quantity).
    Return nothing.
    """


@hookspec
def meterhub_register_quantities(register: Any) -> None:
    """Add quantities to the OBIS vocabulary.

    Called once, before configuration is validated, so site files may name them. Call
    ``register(quantity)`` with a :class:`meterhub.quantities.Quantity`. An OBIS code or
    alias that is already defined differently is refused and reported. Return nothing.
    """


@hookspec
def meterhub_register_simulators(register: Any) -> None:
    """Register simulated meters that ``meterhub sim bus`` and the demo put on a virtual bus.

    Called once, when a simulator is first needed. Call ``register(simulator)`` with an
    object implementing :class:`meterhub.api.MeterSimulator`; its ``protocol`` is the meter
    driver name it speaks. Simulators of several protocols share one pseudo-terminal (a
    mixed bus), so a plugin's simulated meters sit next to the built-in ones. Return nothing.
    """


# --- collector hooks ---------------------------------------------------------------


@hookspec
def meterhub_register_transports(register: Any) -> None:
    """Register transports (channel/collector drivers) such as ``rs485`` or ``plc``.

    Called once, when the transport registry is first needed. Call ``register(transport)``
    for each object implementing :class:`meterhub.api.Transport`; its ``name`` is what a
    site file writes as a channel's ``transport:``. Return nothing.
    """


# --- uplink hooks ------------------------------------------------------------------


@hookspec
def meterhub_register_uplinks(register: Any) -> None:
    """Register uplink drivers that report to a master station (``gdw1376.1``).

    Called once, when the uplink registry is first needed. Call ``register(driver)`` for
    each object implementing :class:`meterhub.api.UplinkDriver`; its ``name`` is what a
    site file writes as an uplink's ``protocol:``. The driver checks its section when the
    site file is loaded and makes the running :class:`meterhub.api.Uplink`, which the
    concentrator starts with its :class:`meterhub.api.Terminal`. Return nothing.
    """


# --- service hooks -----------------------------------------------------------------


@hookspec
def meterhub_register_alarm_rules(register: Any) -> None:
    """Register alarm rules that a site file's ``alarms:`` section may switch on.

    Called once, when the rule registry is first needed. Call ``register(rule_type)`` with
    an object implementing :class:`meterhub.alarms.RuleType`: its ``name`` is the key a
    site file writes under ``alarms:``, and ``make(options)`` builds the running rule from
    that key's mapping (raising ``ValueError`` naming the option that is wrong). The
    built-in rules (offline, clock drift, reverse energy, power quality, ...) register
    through this very hook. Return nothing.
    """


@hookspec
def meterhub_register_tariff_schemes(register: Any) -> None:
    """Register tariff schemes that a site file's ``tariffs:`` entries may name.

    Called once, when the scheme registry is first needed. Call ``register(scheme)`` with
    an object implementing :class:`meterhub.tariffs.TariffScheme`: its ``name`` is what a
    tariff writes as ``scheme:`` (``standard``, the built-in time-of-use and tier scheme,
    when none is written), and ``make(name, mapping)`` builds the priced tariff (raising
    ``ValueError`` naming the key that is wrong). Return nothing.
    """


# --- observers ---------------------------------------------------------------------


@hookspec
def meterhub_readings_collected(readings: list[Any], channel: str) -> None:
    """Observe readings right after they are stored.

    Called by the concentrator once per meter per round with every
    :class:`meterhub.model.Reading` of that meter, failed ones included (check
    ``reading.quality``). ``channel`` is the channel's name. Runs in the event loop: do
    not block. An exception is reported and the round goes on. Return value ignored.
    """


@hookspec
def meterhub_event(event: Any) -> None:
    """Observe an :class:`meterhub.model.Event` (a meter went dead or came back, a round
    finished, an alarm). Called as the event is raised, after it is stored. Runs in the
    event loop: do not block. Return value ignored.
    """


@hookspec
def meterhub_before_command(command: Any) -> str | None:
    """Policy check of a :class:`meterhub.model.Command` about to be sent to a meter.

    Called before every command (relay or valve control, time sync, clear, ...), from
    every origin (CLI, uplink, schedule, plugin), after its credentials were found and
    before anything is sent. Every implementation is asked, in no promised order; the
    command is sent only if each of them returns ``None``. Return a non-empty string to
    refuse: it is the reason shown to the user and kept in the command journal.

    Fails closed: an implementation that raises, or returns anything but ``None`` or a
    non-empty string, refuses the command too (and is reported); it is never skipped.
    ``command`` carries no secrets: credentials go to the driver alone. Runs in the event
    loop: do not block, and do not define it ``async`` (a coroutine would refuse).
    """


@hookspec
def meterhub_register_commands(cli: Any) -> None:
    """Add subcommands to the ``meterhub`` command line.

    Called once while the CLI is built. ``cli`` is the top-level :class:`click.Group`;
    call ``cli.add_command(...)``. Return nothing.
    """
