"""The READMEs' install command brings everything the HIL suite needs.

``pip install ./core ./plugins/rs485 "./hil[test]"`` and then ``pytest --bench … hil/tests``
must work in a fresh venv exactly as written: every module the suite imports, and every
pytest plugin its configuration (``hil/pyproject.toml``) relies on, has to come with
meterhub-hil or with the extras the command names. The development venv has everything
installed, so this is checked against the declared requirements, not by importing.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path

import pytest

HIL = Path(__file__).resolve().parents[1]
REPO = HIL.parent
PROJECT = tomllib.loads((HIL / "pyproject.toml").read_text(encoding="utf-8"))["project"]
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}
DEADLINE_S = 120.0  # only turns a hang into a failure; collecting takes a few seconds


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(text: str) -> str:
    """The distribution a PEP 508 requirement names (``"pytest>=8"`` -> ``pytest``)."""
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text).group(1))


def hil_readme_install_lines() -> dict[str, str]:
    """The ``pip install`` line of the HIL commands, by README."""
    root = (REPO / "README.md").read_text(encoding="utf-8")
    texts = {
        "hil/README.md": (HIL / "README.md").read_text(encoding="utf-8"),
        "README.md, The HIL bench": root.partition("## The HIL bench\n")[2].partition("\n## ")[0],
    }
    lines = {}
    for where, text in texts.items():
        found = [line for line in text.splitlines() if line.startswith("pip install ") and "./hil" in line]
        assert len(found) == 1, f"{where}: one `pip install … ./hil…` line expected, found {found}"
        lines[where] = found[0]
    return lines


def installed_by(line: str) -> set[str]:
    """meterhub-hil, its dependencies and those of the extras that ``line`` names for ``./hil``."""
    words = shlex.split(line, comments=True)
    hil = [word for word in words if re.fullmatch(r"\./hil(\[[^\]]*\])?", word)]
    assert len(hil) == 1, f"{line!r} does not install ./hil"
    extras = [extra.strip() for extra in hil[0][len("./hil["):-1].split(",")] if "[" in hil[0] else []
    requirements = list(PROJECT["dependencies"])
    for extra in extras:
        requirements += PROJECT["optional-dependencies"][extra]
    return {canonical(PROJECT["name"])} | {requirement_name(text) for text in requirements}


def guarded_by_import_error(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``try: … except ImportError:`` (optional imports, e.g. pigpio)."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {kind.id for kind in kinds if isinstance(kind, ast.Name)}
        if caught & IMPORT_ERRORS:
            guarded |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return guarded


def suite_imports() -> dict[str, str]:
    """Top-level modules the suite imports without a fallback, with a file that imports each."""
    modules: dict[str, str] = {}
    for path in sorted((HIL / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = guarded_by_import_error(tree)
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.partition(".")[0], path.name)
    return modules


INSTALL_LINES = hil_readme_install_lines()


@pytest.mark.parametrize("where", sorted(INSTALL_LINES))
def test_the_install_command_brings_every_module_the_suite_imports(where):
    installed = installed_by(INSTALL_LINES[where])
    distributions = packages_distributions()
    missing = []
    for module, path in sorted(suite_imports().items()):
        if module in sys.stdlib_module_names:
            continue
        assert module in distributions, f"{path} imports {module}, which no installed distribution provides"
        if not {canonical(name) for name in distributions[module]} & installed:
            missing.append(f"{module} ({path}; from {', '.join(distributions[module])})")
    assert not missing, f"{where}: `{INSTALL_LINES[where]}` does not install: {'; '.join(missing)}"


@pytest.mark.parametrize("where", sorted(INSTALL_LINES))
def test_the_suite_configuration_needs_only_plugins_the_install_command_brings(where):
    """Collect the suite as the README runs it, with only those plugins and --strict-config:
    an ini option of a plugin that is not installed (``timeout`` without pytest-timeout) fails."""
    installed = installed_by(INSTALL_LINES[where])
    plugins = sorted({ep.value for ep in entry_points(group="pytest11")
                      if ep.dist is not None and canonical(ep.dist.name) in installed})
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "--strict-config", "--collect-only", "-q", "-p", "no:cacheprovider"]
    for plugin in plugins:
        command += ["-p", plugin]
    done = subprocess.run([*command, "hil/tests"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert done.returncode == 0, f"{where}: with {plugins} only:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
