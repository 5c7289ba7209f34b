"""The docs stay in step with the code: README.md is a short first read; docs/reference.md's
command table lists exactly the options that each command's --help shows, and its run-folder
table names what a run writes; every relative link and anchor in README.md, docs/*.md and
bench/README.md resolves."""

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
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "bench" / "README.md"]


def section(path: Path, title: str) -> str:
    """The `## title` section of a Markdown file, up to the next `## ` heading."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def documented_commands() -> dict[str, set[str]]:
    """Command name ("" for `compress` itself) -> options written in its usage cell."""
    rows = [
        line
        for line in section(REFERENCE, "Commands").splitlines()
        if line.startswith("| `compress")
    ]
    commands = {}
    for row in rows:
        usage = row.split("`")[1]
        words = usage.split()
        name = words[1] if len(words) > 1 and words[1] in main.commands else ""
        commands[name] = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    return commands


def click_options(command: click.Command) -> set[str]:
    return {
        opt
        for p in command.params
        if isinstance(p, click.Option)
        for opt in p.opts + p.secondary_opts
        if opt != "--help"
    }


def test_every_command_has_a_row():
    assert set(documented_commands()) == {"", *main.commands}


@pytest.mark.parametrize("name", ["", *sorted(main.commands)])
def test_the_reference_lists_exactly_the_options_of_help(name):
    command = main if name == "" else main.commands[name]
    documented = documented_commands().get(name, set())
    assert documented == click_options(command), (
        f"docs/reference.md's row for `compress {name}` differs from --help: "
        f"missing {sorted(click_options(command) - documented)}, "
        f"extra {sorted(documented - click_options(command))}"
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


# --- links ---------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings: name, name-1, name-2
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"[a-z][\w+.-]*:", target)
    ]  # http:, https:, mailto: are not checked


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {file_part}")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_the_slug_is_githubs():
    assert slug("report.json") == "reportjson"
    assert (
        slug("Small files at dense speed: packed-int4") == "small-files-at-dense-speed-packed-int4"
    )
    assert slug("`compress` and Ray") == "compress-and-ray"


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## The run folder\n\n[ok](#the-run-folder) [bad](#the-run-folders) "
        "[gone](other.md) [web](https://example.org) `[code](#not-a-link)`\n\n"
        "```\n[code](#nor-this)\n```\n"
    )
    assert broken_links(page) == [
        "#the-run-folders: no heading #the-run-folders in page.md",
        "other.md: no file other.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_readme_links_every_page_in_docs():
    linked = {target.partition("#")[0] for target in links(README)}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= linked
