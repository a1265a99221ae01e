"""The plugin system: hooks documented, entry points loaded one by one, failures isolated."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

from meterhub import hookspecs
from meterhub.errors import PluginError
from meterhub.plugins import DISABLE_ENV, STRICT_ENV, Plugins


@pytest.fixture(autouse=True)
def lenient_by_default(monkeypatch):
    """tox runs with METERHUB_STRICT_PLUGINS=1; the tests that want strict mode set it."""
    monkeypatch.delenv(STRICT_ENV, raising=False)


def _hookspec_functions():
    return [
        (name, fn)
        for name, fn in vars(hookspecs).items()
        if name.startswith("meterhub_") and callable(fn)
    ]


def test_there_are_hookspecs_for_every_family():
    names = {name for name, _ in _hookspec_functions()}
    assert {
        "meterhub_register_meter_drivers",
        "meterhub_register_transports",
        "meterhub_register_uplinks",
        "meterhub_readings_collected",
        "meterhub_event",
        "meterhub_before_command",
        "meterhub_register_commands",
    } <= names


@pytest.mark.parametrize("name, fn", _hookspec_functions(), ids=[n for n, _ in _hookspec_functions()])
def test_every_hookspec_is_documented(name, fn):
    doc = inspect.getdoc(fn)
    assert doc, f"hook spec {name} has no docstring"
    assert "Called" in doc, f"hook spec {name} does not say when it is called"


def _fake_distribution(root: Path, dist: str, entry_name: str, module: str, source: str) -> None:
    """An installed-looking distribution on sys.path: a module plus a .dist-info with an entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[meterhub]\n{entry_name} = {module}\n")


GOOD = """
    from meterhub.hookspecs import hookimpl

    class Transport:
        name = "pigeon"
        description = "carrier pigeon"
        def validate(self, channel):
            return []
        def create_channel(self, channel):
            raise NotImplementedError

    @hookimpl
    def meterhub_register_transports(register):
        register(Transport())
"""

BROKEN_IMPORT = """
    import no_such_module_anywhere  # noqa
"""

RAISING_HOOK = """
    from meterhub.hookspecs import hookimpl

    @hookimpl
    def meterhub_register_transports(register):
        raise RuntimeError("vendor bug")
"""

DUPLICATE = """
    from meterhub.hookspecs import hookimpl

    class Transport:
        name = "pigeon"
        description = "a second pigeon"
        def validate(self, channel):
            return []
        def create_channel(self, channel):
            raise NotImplementedError

    @hookimpl
    def meterhub_register_transports(register):
        register(Transport())
"""


@pytest.fixture
def site_packages(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(STRICT_ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    yield tmp_path
    for mod in ("good_plugin", "broken_plugin", "raising_plugin", "dup_plugin"):
        sys.modules.pop(mod, None)


def _info(plugins: Plugins, name: str):
    return {i.name: i for i in plugins.info()}[name]


def test_an_installed_plugin_is_loaded_through_its_entry_point(site_packages):
    _fake_distribution(site_packages, "meterhub-good", "good", "good_plugin", GOOD)
    plugins = Plugins()
    assert plugins.transports()["pigeon"].description == "carrier pigeon"
    info = _info(plugins, "good")
    assert (info.distribution, info.version, info.error) == ("meterhub-good", "1.2.3", "")
    assert info.hooks == ("meterhub_register_transports",)


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(site_packages, caplog):
    _fake_distribution(site_packages, "meterhub-good", "good", "good_plugin", GOOD)
    _fake_distribution(site_packages, "meterhub-broken", "broken", "broken_plugin", BROKEN_IMPORT)
    plugins = Plugins()
    assert "pigeon" in plugins.transports()
    info = _info(plugins, "broken")
    assert "failed to import" in info.error and "no_such_module_anywhere" in info.error
    assert "broken" in caplog.text


def test_a_hook_that_raises_is_reported_and_the_others_still_register(site_packages):
    _fake_distribution(site_packages, "meterhub-good", "good", "good_plugin", GOOD)
    _fake_distribution(site_packages, "meterhub-raising", "raising", "raising_plugin", RAISING_HOOK)
    plugins = Plugins()
    assert "pigeon" in plugins.transports()
    assert "vendor bug" in _info(plugins, "raising").error


def test_a_name_registered_twice_is_the_second_plugins_failure(site_packages):
    _fake_distribution(site_packages, "meterhub-good", "good", "good_plugin", GOOD)
    _fake_distribution(site_packages, "meterhub-dup", "dup", "dup_plugin", DUPLICATE)
    plugins = Plugins()
    transports = plugins.transports()
    infos = {i.name: i for i in plugins.info()}
    failed = [name for name in ("good", "dup") if infos[name].error]
    assert len(failed) == 1 and "already registered" in infos[failed[0]].error
    assert transports["pigeon"].description in ("carrier pigeon", "a second pigeon")


def test_strict_mode_makes_an_import_failure_fatal(site_packages, monkeypatch):
    _fake_distribution(site_packages, "meterhub-broken", "broken", "broken_plugin", BROKEN_IMPORT)
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(PluginError, match="broken"):
        Plugins()


def test_strict_mode_makes_a_raising_hook_fatal(site_packages, monkeypatch):
    _fake_distribution(site_packages, "meterhub-raising", "raising", "raising_plugin", RAISING_HOOK)
    monkeypatch.setenv(STRICT_ENV, "1")
    plugins = Plugins()
    with pytest.raises(PluginError, match="vendor bug"):
        plugins.transports()


def test_disabled_plugins_are_not_even_imported(site_packages, monkeypatch):
    _fake_distribution(site_packages, "meterhub-broken", "broken", "broken_plugin", BROKEN_IMPORT)
    _fake_distribution(site_packages, "meterhub-good", "good", "good_plugin", GOOD)
    monkeypatch.setenv(DISABLE_ENV, "broken, good")
    monkeypatch.setenv(STRICT_ENV, "1")  # would raise if broken were imported
    plugins = Plugins()
    assert "pigeon" not in plugins.transports()
    assert _info(plugins, "broken").disabled and _info(plugins, "good").disabled
    assert "broken_plugin" not in sys.modules


def test_observer_hooks_are_isolated_from_each_other():
    seen = []

    class Good:
        @hookspecs.hookimpl
        def meterhub_event(self, event):
            seen.append(event)

    class Bad:
        @hookspecs.hookimpl
        def meterhub_event(self, event):
            raise ValueError("observer bug")

    plugins = Plugins(load_entry_points=False, extra=[("good", Good()), ("bad", Bad())])
    plugins.call_each("meterhub_event", event="e1")
    assert seen == ["e1"]
    assert "observer bug" in _info(plugins, "bad").error


def test_the_first_policy_answer_refuses_a_command():
    class Policy:
        @hookspecs.hookimpl
        def meterhub_before_command(self, command):
            return "no relay trips on Sundays" if command == "trip" else None

    plugins = Plugins(load_entry_points=False, extra=[("policy", Policy())])
    assert plugins.call_each("meterhub_before_command", command="trip") == ["no relay trips on Sundays"]
    assert plugins.call_each("meterhub_before_command", command="read") == []


class ProfiledDriver:
    """A meter driver that takes device profiles, and refuses those without registers."""

    name = "profiled"

    def __init__(self):
        self.profiles = {}

    def add_profile(self, name, profile, source=""):
        if "registers" not in profile:
            raise ValueError("no registers: mapping")
        self.profiles[name] = (profile, source)


def test_registered_profiles_reach_their_drivers_and_bad_ones_are_the_plugins_failure(monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    driver = ProfiledDriver()

    class Provider:
        @hookspecs.hookimpl
        def meterhub_register_meter_drivers(self, register):
            register(driver)

    class Vendor:
        @hookspecs.hookimpl
        def meterhub_register_profiles(self, register):
            register("profiled", "acme-m1", {"registers": {}})

    class Sloppy:
        @hookspecs.hookimpl
        def meterhub_register_profiles(self, register):
            register("profiled", "acme-m2", {})
            register("nosuch", "acme-m3", {"registers": {}})

    plugins = Plugins(load_entry_points=False, extra=[("provider", Provider()), ("vendor", Vendor()), ("sloppy", Sloppy())])
    assert plugins.meter_drivers()["profiled"] is driver
    assert driver.profiles == {"acme-m1": ({"registers": {}}, "plugin vendor")}
    error = _info(plugins, "sloppy").error
    assert "profiled/acme-m2 refused: no registers" in error
    assert "nosuch" not in error  # a profile for a protocol not installed here is skipped, not a failure
    assert not _info(plugins, "vendor").error
