"""Plugin loading and the registries built from the hooks.

Entry points in the ``meterhub`` group are loaded one at a time. A plugin that fails to
import, or whose hook raises, is reported by name and skipped: one broken vendor plugin
must not take a gateway down. Policy hooks are the exception: a policy that raises refuses
the command it was asked about (:meth:`Plugins.ask_policies`), for a command must not go
out because the check of it broke. ``METERHUB_STRICT_PLUGINS=1`` turns such failures into
errors (for CI); ``METERHUB_DISABLE_PLUGINS=a,b`` keeps plugins from loading at all.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import MeterhubError, PluginError
from .quantities import VOCABULARY, Quantity

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "meterhub"
STRICT_ENV = "METERHUB_STRICT_PLUGINS"
DISABLE_ENV = "METERHUB_DISABLE_PLUGINS"
#: The hook every command is put to before it is sent (see :meth:`Plugins.ask_policies`).
POLICY_HOOK = "meterhub_before_command"

#: Built-in plugins, registered through the same hooks as third-party ones.
DEFAULT_PLUGINS = (
    "meterhub.default_plugins.dlt645",
    "meterhub.default_plugins.cjt188",
    "meterhub.default_plugins.jsonl",
    "meterhub.default_plugins.services",
)


@attrs.frozen
class PluginInfo:
    """What ``meterhub plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()
    error: str = ""  #: why it failed to load or a hook raised; empty when healthy
    disabled: bool = False


@attrs.frozen
class Registered:
    """A thing a plugin registered, remembered with the plugin that provided it."""

    name: str
    value: Any
    plugin: str


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _core_version() -> str:
    try:
        return metadata.version("meterhub")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class Plugins:
    """The plugin manager plus the registries its hooks fill, built lazily."""

    def __init__(self, *, load_entry_points: bool = True, extra: Iterable[tuple[str, Any]] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Registered]] = {}
        for modname in DEFAULT_PLUGINS:
            self._register_module(modname.rsplit(".", 1)[-1], importlib.import_module(modname), "meterhub", _core_version())
        for name, plugin in extra:
            self._register_module(name, plugin, "(in-process)", "")
        if load_entry_points:
            self._load_entry_points()

    # -- loading -----------------------------------------------------------------

    def _register_module(self, name: str, plugin: Any, dist: str, version: str) -> None:
        if name in _disabled():
            self._info[name] = PluginInfo(name, dist, version, disabled=True)
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a malformed hookimpl (wrong argument names, ...)
            self._fail(name, dist, version, f"cannot register: {exc}")
            return
        hooks = tuple(sorted(h.name for h in (self.pm.get_hookcallers(plugin) or [])))
        self._info[name] = PluginInfo(name, dist, version, hooks)

    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in _disabled() or dist in _disabled():
                self._info[ep.name] = PluginInfo(ep.name, dist, version, disabled=True)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(ep.name, dist, version, f"failed to import: {type(exc).__name__}: {exc}")
                continue
            self._register_module(ep.name, plugin, dist, version)

    def _note_error(self, name: str, dist: str, version: str, message: str) -> None:
        """Remember a plugin's failure, for ``meterhub plugins`` to show."""
        old = self._info.get(name)
        hooks = old.hooks if old else ()
        error = f"{old.error}; {message}" if old and old.error else message
        self._info[name] = PluginInfo(name, dist, version, hooks, error)

    def _fail(self, name: str, dist: str, version: str, message: str) -> None:
        self._note_error(name, dist, version, message)
        if _strict():
            raise PluginError(f"plugin {name!r} ({dist}): {message}")
        log.warning("plugin %r (%s) skipped: %s", name, dist, message)

    # -- calling hooks one implementation at a time --------------------------------

    def call_each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of a hook in pluggy's order, isolating failures.

        Results that are not ``None`` are returned in call order. An implementation
        that raises is reported against its plugin (fatal in strict mode); the others
        still run. The policy hook is the exception: a failing policy is not skipped but
        refuses, and the result is the list of refusal reasons (see :meth:`ask_policies`).
        """
        if hook_name == POLICY_HOOK:
            return [reason for _, reason in self.ask_policies(**kwargs)]
        results = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                info = self._info.get(impl.plugin_name)
                self._fail(
                    impl.plugin_name,
                    info.distribution if info else "?",
                    info.version if info else "?",
                    f"hook {hook_name} raised {type(exc).__name__}: {exc}",
                )
                continue
            if result is not None:
                results.append(result)
        return results

    def ask_policies(self, command: Any) -> list[tuple[str, str]]:
        """Ask every ``meterhub_before_command`` implementation about ``command``; return
        ``(plugin name, reason)`` for each one that refused, in call order (empty: all agreed).

        Fails closed: an implementation that raises refuses (reason ``policy plugin X
        failed: TypeError: ...``; also logged and shown by ``meterhub plugins``, but never
        fatal, even in strict mode: the refusal is the safe outcome), and so does one that
        answers anything but ``None`` or a non-empty reason, or cannot be called plainly
        (a hook wrapper, an ``async def``).
        """
        refusals: list[tuple[str, str]] = []
        caller = getattr(self.pm.hook, POLICY_HOOK)
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            name = impl.plugin_name
            if impl.hookwrapper or impl.wrapper:
                reason = (f"policy plugin {name} declares its {POLICY_HOOK} as a hook wrapper, "
                          "which cannot answer; it refuses every command until fixed")
                refusals.append((name, reason))
                continue
            try:
                answer = impl.function(*[{"command": command}[arg] for arg in impl.argnames])
            except Exception as exc:
                info = self._info.get(name)
                self._note_error(name, info.distribution if info else "?", info.version if info else "?",
                                 f"hook {POLICY_HOOK} raised {type(exc).__name__}: {exc}")
                log.error("policy plugin %r raised %s: %s; the command is refused", name, type(exc).__name__, exc)
                refusals.append((name, f"policy plugin {name} failed: {type(exc).__name__}: {exc}"))
                continue
            if answer is None:
                continue
            if isinstance(answer, str) and answer.strip():
                refusals.append((name, answer.strip()))
                continue
            if inspect.iscoroutine(answer):
                answer.close()  # never awaited: say so here, not in a RuntimeWarning
                reason = f"policy plugin {name} is async; {POLICY_HOOK} must answer at once"
            elif isinstance(answer, str):
                reason = f"policy plugin {name} refused without giving a reason"
            else:
                reason = (f"policy plugin {name} answered {type(answer).__name__}, "
                          "which is neither None (allow) nor a reason (refuse)")
            refusals.append((name, reason))
        return refusals

    def _registry(self, hook_name: str, key: Callable[..., str], value: Callable[..., Any]) -> dict[str, Registered]:
        if hook_name in self._registries:
            return self._registries[hook_name]
        found: dict[str, Registered] = {}
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            plugin = impl.plugin_name
            collected: list[tuple[str, Any]] = []

            def register(*args: Any, **kw: Any) -> None:
                collected.append((key(*args, **kw), value(*args, **kw)))

            try:
                impl.function(register)
            except Exception as exc:
                info = self._info[plugin]
                self._fail(plugin, info.distribution, info.version, f"hook {hook_name} raised {type(exc).__name__}: {exc}")
                continue
            for name, item in collected:
                if name in found:
                    info = self._info[plugin]
                    self._fail(plugin, info.distribution, info.version,
                               f"{hook_name}: {name!r} is already registered by plugin {found[name].plugin!r}")
                    continue
                found[name] = Registered(name, item, plugin)
        self._registries[hook_name] = found
        return found

    # -- registries ----------------------------------------------------------------

    def meter_drivers(self) -> Mapping[str, Any]:
        """Meter protocol drivers by protocol name, each given the device profiles
        registered for its protocol (through its ``add_profile``)."""
        first = "meterhub_register_meter_drivers" not in self._registries
        drivers = self._by("meterhub_register_meter_drivers", "name")
        if first:
            self._hand_out_profiles(drivers)
        return drivers

    def _hand_out_profiles(self, drivers: Mapping[str, Any]) -> None:
        """Give every registered profile to its protocol's driver; a profile the driver
        refuses is its plugin's failure (one for a protocol nobody here drives is skipped)."""
        from .api import ProfileTaker  # not at the top: loading the plugins does not need the API

        self.profiles()
        for r in self._registries["meterhub_register_profiles"].values():
            protocol, name, profile = r.value
            driver = drivers.get(protocol)
            problem = None
            if driver is None:
                # a vendor may ship profiles for transports this gateway has not installed
                log.info("plugin %r: profile %r is for protocol %r, which no installed driver speaks; not used",
                         r.plugin, name, protocol)
            elif not isinstance(driver, ProfileTaker):
                problem = f"profile {name!r}: the {protocol} driver takes no device profiles"
            else:
                try:
                    driver.add_profile(name, profile, source=f"plugin {r.plugin}")
                except (MeterhubError, ValueError, TypeError, KeyError) as exc:
                    problem = f"profile {protocol}/{name} refused: {exc}"
            if problem:
                info = self._info[r.plugin]
                self._fail(r.plugin, info.distribution, info.version, problem)

    def _by(self, hook_name: str, attribute: str) -> dict[str, Any]:
        """What the plugins registered through ``hook_name``, by each thing's ``attribute``
        (its ``name``, a simulator's ``protocol``)."""
        reg = self._registry(hook_name, lambda thing: getattr(thing, attribute), lambda thing: thing)
        return {name: r.value for name, r in reg.items()}

    def transports(self) -> Mapping[str, Any]:
        """Transports by name (``rs485``, ...)."""
        return self._by("meterhub_register_transports", "name")

    def simulators(self) -> Mapping[str, Any]:
        """Meter simulators by protocol name."""
        return self._by("meterhub_register_simulators", "protocol")

    def uplinks(self) -> Mapping[str, Any]:
        """Uplink drivers (:class:`meterhub.api.UplinkDriver`) by protocol name."""
        return self._by("meterhub_register_uplinks", "name")

    def alarm_rules(self) -> Mapping[str, Any]:
        """Alarm rule types (:class:`meterhub.alarms.RuleType`) by the ``alarms:`` key they take."""
        return self._by("meterhub_register_alarm_rules", "name")

    def tariff_schemes(self) -> Mapping[str, Any]:
        """Tariff schemes (:class:`meterhub.tariffs.TariffScheme`) by the ``scheme:`` name they take."""
        return self._by("meterhub_register_tariff_schemes", "name")

    def profiles(self) -> Mapping[tuple[str, str], Mapping[str, Any]]:
        """Device profiles keyed by ``(protocol, name)``."""
        reg = self._registry(
            "meterhub_register_profiles",
            lambda protocol, name, profile: f"{protocol}/{name}",
            lambda protocol, name, profile: (protocol, name, profile),
        )
        return {(r.value[0], r.value[1]): r.value[2] for r in reg.values()}

    def load_quantities(self) -> None:
        """Add plugin quantities to the vocabulary (idempotent)."""
        if "meterhub_register_quantities" in self._registries:
            return
        reg = self._registry("meterhub_register_quantities", lambda q: q.obis, lambda q: q)
        for r in reg.values():
            q: Quantity = r.value
            try:
                VOCABULARY.add(q)
            except ValueError as exc:
                info = self._info[r.plugin]
                self._fail(r.plugin, info.distribution, info.version, f"quantity {q.obis}: {exc}")

    def info(self) -> list[PluginInfo]:
        """Every plugin known, healthy, failed or disabled, sorted by name."""
        # Building every registry surfaces hook failures before they are listed.
        self.meter_drivers(); self.transports(); self.uplinks(); self.profiles(); self.simulators()
        self.load_quantities()
        return sorted(self._info.values(), key=lambda i: i.name)


_DEFAULT: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Plugins()
        _DEFAULT.load_quantities()
    return _DEFAULT


def reset_plugins() -> None:
    """Forget the loaded plugins (tests; a reload after installing a plugin)."""
    global _DEFAULT
    _DEFAULT = None
