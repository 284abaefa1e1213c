"""The comparison table in three forms: the terminal (rich), Markdown and CSV."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from metalab.compare.published import CI95, value_text
from metalab.compare.rows import Row


def fmt(value: float | None, ci: float | None = None, digits: int = 4) -> str:
    if value is None:
        return ""
    text = f"{value:.{digits}g}"
    return f"{text} ± {ci:.2g}" if ci is not None else text


def gap_text(row: Row) -> str:
    """Ours minus the paper's, signed, so a shortfall reads as negative points."""
    if row.gap is None:
        return ""
    return f"{row.gap:+.2f}" + (" pts" if row.unit == "%" else f" {row.unit}")


def flag_text(row: Row) -> str:
    if row.published is None:
        return ""
    if row.outside_ci is None:
        return "no CI published"
    kind = "" if row.published.interval == CI95 else f" ({row.published.interval})"
    return ("OUTSIDE published CI" if row.outside_ci else "within published CI") + kind


def display_rows(
    rows: list[Row], sources: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the terminal, Markdown and HTML tables; ``sources=False``
    (the terminal) names the paper's method without its citation, which the files keep."""
    header = ["group", "runs", "test (mean ± 95% CI)", "val best", "published", "gap to paper",
              "flag"]
    cells = []
    for row in rows:
        p = row.published
        runs = f"{len(row.group.runs)}" + (
            f" (+{len(row.group.failed)} failed)" if row.group.failed else ""
        )
        cells.append(
            [
                row.group.label,
                runs,
                f"{fmt(row.test_mean, row.test_ci95)} {row.unit}",
                fmt(row.val_best_mean),
                (f"{value_text(p)} ({p.method}; {p.source})" if sources else value_text(p))
                if p
                else "",
                gap_text(row),
                flag_text(row),
            ]
        )
    return header, cells


def print_table(rows: list[Row], console: Console | None = None) -> None:
    header, cells = display_rows(rows, sources=False)
    table = Table(title="metalab-compare: test metric over seeds")
    for name in header:
        table.add_column(name, overflow="fold")
    for line, row in zip(cells, rows, strict=True):
        style = "bold red" if row.outside_ci else None
        table.add_row(*line, style=style)
    (console or Console()).print(table)


def write_markdown(rows: list[Row], path: Path) -> None:
    header, cells = display_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[Row], path: Path, extra: Callable[[Row], dict] | None = None) -> None:
    """``extra``: further columns per row, appended after the table's own (timing.py)."""
    write_records([row.as_dict() | (extra(row) if extra else {}) for row in rows], path)


def write_records(records: list[dict], path: Path) -> None:
    """A CSV with the union of the records' keys as columns, in order of first appearance."""
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(records)


def write_runs_csv(rows: list[Row], failed_elsewhere: list, path: Path) -> None:
    """Every run, one line each: what the aggregated table was computed from."""
    columns = ["group", "status", "seed", "test_mean", "test_ci95", "val_best", "error", "path"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            for run in [*row.group.runs, *row.group.failed]:
                writer.writerow(
                    [
                        row.group.label,
                        run.status,
                        run.config.get("seed"),
                        run.test_mean,
                        run.test_ci95,
                        run.val_best,
                        run.error or "",
                        run.path,
                    ]
                )
        for run in failed_elsewhere:
            writer.writerow(
                ["", run.status, run.config.get("seed"), "", "", "", run.error or "", run.path]
            )
