"""The README's promises hold: its test command is what CI runs, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands() -> None:
    """Quick start is two one-line commands: the offline demo and the test suite."""
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("nomad-bulk demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run calls the README's second Quick-start command, character for character."""
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start_commands()[1] in ci_lines


def test_every_documented_subcommand_exists() -> None:
    """Each subcommand named in the README's command reference is registered."""
    from nomad_bulk.cli import build_parser

    text = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`nomad-bulk (\w+)", text))
    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert documented <= registered, documented - registered
    assert {"upload", "status", "download", "serve", "demo"} <= documented
