"""The built-in alarm rules and tariff scheme, registered through the public service hooks
like a vendor's own."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl
def meterhub_register_alarm_rules(register: Any) -> None:
    from ..alarms import BUILTIN_RULE_TYPES

    for rule_type in BUILTIN_RULE_TYPES:
        register(rule_type)


@hookimpl
def meterhub_register_tariff_schemes(register: Any) -> None:
    from ..tariffs import STANDARD_SCHEME

    register(STANDARD_SCHEME)
