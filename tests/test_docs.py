"""The docs stay in step with the code: README.md is a short first read; docs/reference.md's
command table lists exactly the options that each command's --help shows, and its run-folder
table names what a run writes."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from compress.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"


def section(path: Path, title: str) -> str:
    """The `## title` section of a Markdown file, up to the next `## ` heading."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def documented_commands() -> dict[str, set[str]]:
    """Command name ("" for `compress` itself) -> options written in its usage cell."""
    rows = [line for line in section(REFERENCE, "Commands").splitlines() if line.startswith("| `compress")]
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
    assert set(documented_commands()) == {"", *main.commands}


@pytest.mark.parametrize("name", ["", *sorted(main.commands)])
def test_the_reference_lists_exactly_the_options_of_help(name):
    command = main if name == "" else main.commands[name]
    documented = documented_commands().get(name, set())
    assert documented == click_options(command), (
        f"docs/reference.md's row for `compress {name}` differs from --help: "
        f"missing {sorted(click_options(command) - documented)}, extra {sorted(documented - click_options(command))}"
    )


def test_the_run_folder_table_names_the_lock_and_sensitivity():
    run_folder = section(REFERENCE, "The run folder")
    for entry in ("`.lock`", "`sensitivity/`", "`run.log`", "`deploy/`", "`report.json`"):
        assert entry in run_folder


def test_the_models_page_states_the_model_contract_and_normalization():
    from compress.data import DATASETS

    models = (DOCS / "models.md").read_text()
    assert "num_classes" in models and "input_shape" in models and "logits" in models
    for name, spec in DATASETS.items():
        row = next(line for line in models.splitlines() if line.startswith(f"| `{name}`"))
        assert f"{spec.mean:.4f}" in row and f"{spec.std:.4f}" in row


def test_the_readme_is_a_short_first_read():
    text = README.read_text()
    assert len(text.splitlines()) < 300
    assert "\n## Two commands\n" in text and "compress run pipelines/mnist.toml" in text
