"""README.md stays in step with the code: its command table lists exactly the options that
each command's --help shows, and its run-folder table names what a run writes."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from compress.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def readme_commands() -> dict[str, set[str]]:
    """Command name ("" for `compress` itself) -> options written in its usage cell."""
    rows = [line for line in readme_section("Commands").splitlines() if line.startswith("| `compress")]
    commands = {}
    for row in rows:
        usage = row.split("`")[1]
        words = usage.split()
        name = words[1] if len(words) > 1 and words[1] in main.commands else ""
        commands[name] = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    return commands


def click_options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts
            if opt != "--help"}


def test_every_command_has_a_row():
    assert set(readme_commands()) == {"", *main.commands}


@pytest.mark.parametrize("name", ["", *sorted(main.commands)])
def test_the_readme_lists_exactly_the_options_of_help(name):
    command = main if name == "" else main.commands[name]
    documented = readme_commands().get(name, set())
    assert documented == click_options(command), (
        f"README's row for `compress {name}` differs from --help: "
        f"missing {sorted(click_options(command) - documented)}, extra {sorted(documented - click_options(command))}"
    )


def test_the_run_folder_table_names_the_lock_and_sensitivity():
    section = readme_section("The run folder")
    for entry in ("`.lock`", "`sensitivity/`", "`run.log`", "`deploy/`", "`report.json`"):
        assert entry in section


def test_the_readme_states_the_model_contract_and_normalization():
    from compress.data import DATASETS

    section = readme_section("Models")
    assert "num_classes" in section and "input_shape" in section and "logits" in section
    for name, spec in DATASETS.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}`"))
        assert f"{spec.mean:.4f}" in row and f"{spec.std:.4f}" in row
