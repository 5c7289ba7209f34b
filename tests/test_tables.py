"""The one table renderer: terminal text, Markdown and CSV, and that nothing else in the
package lays out tables by hand."""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

import compress
from compress import tables

HEADERS = ["name", "acc %", "status"]
ROWS = [["dense", "98.10%", "ok"], ["pruned-int8", "97.95%", "failed: logits"]]


def test_text_aligns_the_first_column_left_and_the_rest_right():
    lines = tables.text(HEADERS, ROWS)
    assert lines == [
        "name          acc %          status",
        "-----------  ------  --------------",
        "dense        98.10%              ok",
        "pruned-int8  97.95%  failed: logits",
    ]


def test_left_alignment_can_depend_on_the_cell_and_trailing_spaces_can_go():
    lines = tables.text(
        HEADERS, ROWS, left=lambda i, cell: i == 0 or cell.startswith("ok"), strip=True
    )
    assert lines[2] == "dense        98.10%  ok"
    assert lines[3] == "pruned-int8  97.95%  failed: logits"
    assert (
        tables.text(HEADERS, ROWS, left=[True, True], sep=" ")[2]
        == "dense       98.10%             ok"
    )


def test_an_empty_table_is_its_header_and_rule():
    assert tables.text(["a", "bb"], []) == ["a  bb", "-  --"]
    assert tables.markdown(["a", "bb"], []) == ["| a | bb |", "|---|---|"]


def test_markdown_has_a_separator_row_and_one_line_per_row():
    assert tables.markdown(HEADERS, ROWS) == [
        "| name | acc % | status |",
        "|---|---|---|",
        "| dense | 98.10% | ok |",
        "| pruned-int8 | 97.95% | failed: logits |",
    ]


def test_csv_keeps_the_fields_in_order_and_ignores_other_keys():
    text = tables.csv_text(["b", "a"], [{"a": 1, "b": "x,y", "c": 3}, {"a": None, "b": 2}])
    assert list(csv.reader(io.StringIO(text))) == [["b", "a"], ["x,y", "1"], ["2", ""]]


def test_cells_format_values_and_show_missing_ones_as_a_dash():
    columns = [
        ("n", "n", "{}"),
        ("v", "v %", "{:.1%}"),
        ("f", "f", lambda v: f"<{v}>"),
        ("s", "s", "{:.2f}"),
    ]
    headers, rows = tables.cells(columns, [{"n": "a", "v": 0.5, "f": 1, "s": "text"}, {"n": "b"}])
    assert headers == ["n", "v %", "f", "s"]
    assert rows == [["a", "50.0%", "<1>", "text"], ["b", "-", "-", "-"]]


def test_the_terminal_width_is_columns_else_the_terminal_else_80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert tables.terminal_width() == 123
    monkeypatch.delenv("COLUMNS")

    def not_a_terminal(fd):
        raise OSError("not a terminal")

    monkeypatch.setattr("os.get_terminal_size", not_a_terminal)  # a pipe, a file, a CI log
    assert tables.terminal_width() == 80


def test_a_cell_is_shortened_with_a_mark_where_it_was_cut():
    assert tables.shorten("failed: logits differ", 10) == "failed: l…"
    assert tables.shorten("ok", 10) == "ok"


def _code_strings_and_calls(path: Path) -> list[str]:
    """Non-docstring string constants and called attribute names of a module."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            found.append(node.value)
        elif isinstance(node, ast.Attribute) and node.attr in ("ljust", "rjust", "DictWriter"):
            found.append(node.attr)
    return found


def test_no_other_module_lays_out_a_table_by_hand():
    package = Path(compress.__file__).parent
    offenders = {
        str(path.relative_to(package)): hits
        for path in package.rglob("*.py")
        if path.name != "tables.py"
        if (
            hits := [
                s
                for s in _code_strings_and_calls(path)
                if "---|" in s or s in ("ljust", "rjust", "DictWriter")
            ]
        )
    }
    assert offenders == {}
