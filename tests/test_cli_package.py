"""The CLI lives in the package (``audit/cli/``): every Typer app hides local variables in
tracebacks (they could hold storage credentials), the console script lists every command, and
``python -m audit.cli`` runs."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import typer
from conftest import AUDIT_CLI

import audit

REPO = Path(__file__).parents[1]
COMMANDS = (
    "run",
    "status",
    "verify",
    "submit",
    "logs",
    "stop",
    "list",
    "models",
    "report",
    "human",
)
# Where the Typer apps are; the walk below must find at least these.
APP_MODULES = {
    "audit.cli",
    "audit.cli.run",
    "audit.cli.jobs",
    "audit.cli.models",
    "audit.human.cli",
    "audit.report.cli",
}


def _modules_mentioning_typer() -> list[str]:
    """Every module of the package whose source names typer (the others cannot make an app)."""
    names = []
    for info in pkgutil.walk_packages(audit.__path__, "audit."):
        spec = importlib.util.find_spec(info.name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(".py") and "typer" in Path(origin).read_text().lower():
            names.append(info.name)
    return names


def test_every_typer_app_hides_locals() -> None:
    apps: dict[str, list[typer.Typer]] = {}
    for name in _modules_mentioning_typer():
        module = importlib.import_module(name)
        found = [v for v in vars(module).values() if isinstance(v, typer.Typer)]
        if found:
            apps[name] = found
    assert set(apps) >= APP_MODULES, sorted(apps)
    for name, found in apps.items():
        for app in found:
            assert app.pretty_exceptions_show_locals is False, name


def test_every_typer_app_is_created_with_show_locals_off_explicitly() -> None:
    """Not left to Typer's default: each ``Typer(...)`` call in the package says so."""
    calls = 0
    for path in sorted((REPO / "audit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name != "Typer":
                continue
            calls += 1
            kw = {k.arg: k.value for k in node.keywords}
            value = kw.get("pretty_exceptions_show_locals")
            assert isinstance(value, ast.Constant) and value.value is False, (
                f"{path.relative_to(REPO)}:{node.lineno}"
            )
    assert calls >= len(APP_MODULES)


def test_console_script_lists_every_command() -> None:
    result = subprocess.run(
        [AUDIT_CLI, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    listed = [
        line.strip("│ ").split()[0]
        for line in result.stdout.splitlines()
        if line.startswith("│ ")
        and not line[2:3].isspace()  # not a wrapped help line
        and not line.strip("│ ").startswith("-")
    ]
    assert listed == list(COMMANDS), result.stdout


def test_python_m_audit_cli_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "audit.cli", "models", "resnet1*"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["resnet101", "resnet152", "resnet18"], result.stdout
    for line in result.stdout.splitlines():
        assert line.split()[1] == "torchvision"


def test_the_top_level_cli_module_is_gone() -> None:
    assert not (REPO / "cli.py").exists()
    assert importlib.util.find_spec("cli") is None


def test_version_names_the_installed_distributions() -> None:
    from importlib.metadata import version

    from typer.testing import CliRunner

    from audit.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith(f"audit-cli {version('imagenet-audit')} (imagenet-audit; ")
    assert f"Ray {version('ray')}" in line and f"torch {version('torch')}" in line


def _commands(group: typer.main.TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, command in group.commands.items():
        if isinstance(command, typer.main.TyperGroup):
            out += _commands(command, (*path, name))
        else:
            out.append((*path, name))
    return out


def test_every_help_reads_without_python_type_metavars() -> None:
    """Typer 0.29 shows a flag as ``<bool>`` and a repeatable option as ``<list[str]>``: the
    range in pyproject.toml keeps it out; every command's ``--help`` is checked."""
    from typer.testing import CliRunner

    from audit.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    paths = _commands(group)
    assert len(paths) > len(COMMANDS)  # the root, every command, the human group's commands
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        for bad in ("<bool>", "<list["):
            assert bad not in result.output, (path, bad)
