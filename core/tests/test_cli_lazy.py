"""The command line imports a built-in command only when it runs: ``meterhub --help`` lists
them from a table, which must say what each command's own help says."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from meterhub.cli import BUILTIN_COMMANDS, cli


@pytest.mark.parametrize("name", sorted(BUILTIN_COMMANDS))
def test_the_table_says_what_the_command_says(name: str) -> None:
    module, attr, short_help = BUILTIN_COMMANDS[name]
    command = getattr(importlib.import_module(f"meterhub.cli.{module}"), attr)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert not command.hidden and not command.short_help  # the listing is made from the help text
    assert command.get_short_help_str(limit=10_000) == short_help


def _help(width: int) -> str:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_listing_is_the_same_before_and_after_the_commands_are_imported() -> None:
    widths = (40, 60, 80, 120, 200)
    listed = {width: _help(width) for width in widths}  # before the loop below, built-ins may be stubs
    for name in BUILTIN_COMMANDS:
        assert cli.get_command(click.Context(cli), name) is not None
    assert set(BUILTIN_COMMANDS) <= set(cli.commands)
    assert {width: _help(width) for width in widths} == listed


def test_help_imports_no_command_module() -> None:
    code = ("import json, sys\n"
            "from meterhub.cli import main\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert "Commands:" in done.stdout
    commands = {f"meterhub.cli.{module}" for module, _, _ in BUILTIN_COMMANDS.values()}
    assert not commands & modules
    assert not {"pymodbus", "meterhub.protocols.dlt645_driver"} & modules  # the plugins import theirs when asked


def test_a_name_that_is_not_built_in_is_looked_for_among_the_plugin_commands() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_a_misspelt_built_in_is_suggested() -> None:
    result = subprocess.run([sys.executable, "-m", "meterhub.cli", "expor"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "Did you mean 'export'?" in result.stderr
