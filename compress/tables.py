"""One table renderer for people and programs: terminal text, Markdown and CSV.

    headers, rows = cells(COLUMNS, artifacts)          # (key, header, format) columns
    print("\\n".join(text(headers, rows)))              # first column left, the rest right
    print("\\n".join(markdown(headers, rows)))
    print(csv_text(["name", "accuracy"], artifacts))   # dict rows, other keys ignored
    terminal_width()                                   # what a table printed now may fill

Report, compare, sweep, tune and sensitivity all lay their tables out here; each decides
only which cells to show and how to format a value.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Sequence
from typing import Any

Format = str | Callable[[Any], str]  # "{:.2%}" or a function of the value
Left = Sequence[bool] | Callable[[int, str], bool]  # per column, or per (column, cell)


def format_cell(value: Any, fmt: Format = "{}") -> str:
    """A value as text: "-" for None; a format string, or a function."""
    if value is None:
        return "-"
    if callable(fmt):
        return fmt(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def cells(
    columns: Sequence[tuple[str, str, Format]], rows: Sequence[dict]
) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of dict rows for (key, header, format) columns."""
    headers = [header for _, header, _ in columns]
    return headers, [[format_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]


def widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]


def text(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    left: Left = (True,),
    sep: str = "  ",
    strip: bool = False,
) -> list[str]:
    """Aligned lines: the header, a rule of dashes, one line per row. `left` says which
    columns (or cells) are left-aligned, the others right-aligned (a sequence shorter than
    the columns means right for the rest); `strip` drops trailing spaces."""
    sizes = widths(headers, rows)

    def is_left(i: int, cell: str) -> bool:
        return left(i, cell) if callable(left) else i < len(left) and left[i]

    def line(values: Sequence[str]) -> str:
        out = sep.join(
            v.ljust(w) if is_left(i, v) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, sizes, strict=True))
        )
        return out.rstrip() if strip else out

    return [line(headers), sep.join("-" * w for w in sizes), *map(line, rows)]


def width(lines: Sequence[str]) -> int:
    return max(map(len, lines), default=0)


def terminal_width() -> int:
    """Columns a printed table may fill: the COLUMNS variable when it is a positive number,
    else the terminal's width, else 80 (output to a file or a pipe, as in CI logs)."""
    return shutil.get_terminal_size((80, 24)).columns


def shorten(cell: str, size: int) -> str:
    """`cell` cut to `size` characters, its end marked by "…" where it was cut."""
    return cell if len(cell) <= size else cell[: max(size - 1, 0)] + "…"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table: header, separator, one line per row."""
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def csv_text(fields: Sequence[str], rows: Sequence[dict]) -> str:
    """CSV with a header line; keys of the rows that are not fields are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
