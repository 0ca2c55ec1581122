"""The README's promises that a fresh clone depends on."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_a_run_command_and_a_test_command() -> None:
    run, test = readme_commands()[:2]
    assert "egress-monitor replay" in run and "pcaps/" in run
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
