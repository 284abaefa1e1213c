"""The comparison table in three forms: the terminal (rich), Markdown and CSV."""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from metalab.compare.groups import Group
from metalab.compare.groups import value_text as config_text
from metalab.compare.load import Run
from metalab.compare.published import CI95, scale, value_text
from metalab.compare.rows import Row


def relative(path: Path, base: Path) -> str:
    """``path`` as seen from ``base`` (``../sweep/0_maml``), never an absolute /tmp path;
    the absolute path only where no relative one exists (another drive)."""
    try:
        return os.path.relpath(Path(path).resolve(), Path(base).resolve())
    except ValueError:
        return str(path)


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


def mean_of(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None


def fmt_seconds(seconds: float | None) -> str:
    """Seconds as a person reads a budget: 85.3 s, 12.5 min, 1.95 h."""
    if seconds is None:
        return ""
    if seconds < 1000:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def steps_text(group: Group) -> str:
    """Outer steps per run: ``2000``, or the range over the group's seeds."""
    steps = sorted({int(run.train["steps"]) for run in group.runs if "steps" in run.train})
    if not steps:
        return ""
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"


def runs_text(group: Group) -> str:
    """``3``, ``3 (+1 failed)``; an evaluation row counts checkpoints, not runs."""
    n = len(group.runs)
    text = str(n) if group.evaluation is None else f"{n} checkpoint{'s' if n != 1 else ''}"
    if group.repeats:
        text += f" (+{len(group.repeats)} repeated)"
    if group.failed:
        text += f" (+{len(group.failed)} failed)"
    return text


def display_rows(rows: list[Row], sources: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the terminal, Markdown and HTML tables; ``sources=False``
    (the terminal) names the paper's method without its citation, which the files keep.
    An evaluation row follows the row of the runs whose checkpoints it tested, its label
    saying so; it has no training budget of its own."""
    header = ["group", "runs", "steps", "train CPU / run", "test (mean ± 95% CI)", "val best",
              "published", "gap to paper", "flag"]  # fmt: skip
    domains = list(dict.fromkeys(label for row in rows for label in row.domains))
    header += [f"test on {label}" for label in domains]  # dataset=multi, dataset.test
    cells = []
    for row in rows:
        p = row.published
        group = row.group
        cpu = mean_of([run.train.get("cpu_seconds") for run in group.runs])
        cells.append(
            [
                ("↳ " if group.evaluation is not None else "") + group.label,
                runs_text(group),
                steps_text(group),
                fmt_seconds(cpu),
                f"{fmt(row.test_mean, row.test_ci95)} {row.unit}",
                fmt(row.val_best_mean),
                (f"{value_text(p)} ({p.method}; {p.source})" if sources else value_text(p))
                if p
                else "",
                gap_text(row),
                flag_text(row),
                *(domain_text(row, label) for label in domains),
            ]
        )
    return header, cells


def domain_text(row: Row, label: str) -> str:
    """A test domain's result in the row's unit, blank where the row was not tested on it."""
    if label not in row.domains:
        return ""
    mean, ci = row.domains[label]
    return f"{fmt(mean, ci)} {row.unit}"


def header_lines(header: list[tuple[str, str]]) -> list[str]:
    """The report header as Markdown: ``- **Setting**: ...``."""
    return [f"- **{field}**: {text}" for field, text in header]


def print_table(
    rows: list[Row], console: Console | None = None, header: list[tuple[str, str]] = ()
) -> None:
    console = console or Console()
    for field, text in header:
        console.print(f"[bold]{field}:[/bold] {text}", highlight=False)
    head, cells = display_rows(rows, sources=False)
    table = Table(title="metalab-compare: test metric over seeds")
    for name in head:
        table.add_column(name, overflow="fold")
    for line, row in zip(cells, rows, strict=True):
        style = "bold red" if row.outside_ci else ("italic" if row.group.evaluation else None)
        table.add_row(*line, style=style)
    console.print(table)


def markdown_table(header: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
                    for line in cells]  # fmt: skip


def write_markdown(
    rows: list[Row], path: Path, title: str = "metalab-compare",
    header: list[tuple[str, str]] = (), base: Path | None = None,
) -> None:  # fmt: skip
    """The title, the header, the table, and every run (``## Runs``)."""
    lines = [f"# {title}", "", *header_lines(header), ""] if header else []
    if rows:
        lines += markdown_table(*display_rows(rows))
        lines += ["", "## Runs", "", *markdown_table(*run_lines(rows, base or path.parent))]
    else:
        lines.append(NONE_COMPLETED)
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


NONE_COMPLETED = "No run has completed yet: the runs in progress are listed below."


def finished_text(run: Run) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run.finished)) if run.finished else ""


def listed_runs(rows: list[Row]) -> list[tuple[Row, Run, str]]:
    """Every run of the report, once, as (its row, the run, its status in the report): a
    group's runs, each followed by the evaluations of its checkpoints; evaluations of runs
    not compared under their own row."""
    evaluations: dict[Path, list[tuple[Row, Run, str]]] = {}
    for row in rows:
        if row.group.source is not None:
            for run, status in entries(row.group):
                evaluations.setdefault(run.source.resolve(), []).append((row, run, status))
    listed = []
    for row in rows:
        if row.group.evaluation is None:
            for run, status in entries(row.group):
                listed.append((row, run, status))
                listed += evaluations.get(run.path.resolve(), [])
        elif row.group.source is None:
            listed += [(row, run, status) for run, status in entries(row.group)]
    return listed


def entries(group: Group) -> list[tuple[Run, str]]:
    return ([(run, run.status) for run in group.runs]
            + [(run, "repeated (not counted)") for run in group.repeats]
            + [(run, run.status) for run in group.failed + group.in_progress])  # fmt: skip


def run_cells(row: Row, run: Run, status: str, base: Path) -> list[str]:
    factor = scale(row.metric)
    test = ""
    if run.test_mean is not None:
        ci = run.test_ci95 * factor if run.test_ci95 is not None else None
        test = f"{fmt(run.test_mean * factor, ci)} {row.unit}"
    wall = run.train.get("wall_seconds")
    evaluated = row.group.evaluation is not None
    return [
        f"↳ eval of {row.group.evaluation}" if evaluated else row.group.label,
        config_text(run.config.get("seed")),
        status,
        str(run.train.get("steps", "")),
        fmt_seconds(run.train.get("cpu_seconds")),
        fmt_seconds(wall),
        test,
        fmt(run.val_best * factor) if run.val_best is not None else "",
        (run.commit or "")[:7],
        finished_text(run),
        relative(run.path, base),
    ]


def run_lines(rows: list[Row], base: Path) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-run table: its steps and seconds, its result, the commit
    and when it finished, and its folder relative to ``base``."""
    header = ["group", "seed", "status", "steps", "train CPU", "train wall", "test",
              "val best", "commit", "finished", "folder"]  # fmt: skip
    return header, [run_cells(row, run, status, base) for row, run, status in listed_runs(rows)]


def write_runs_csv(rows: list[Row], without_row: list[Group], path: Path) -> None:
    """Every run, one line each: what the aggregated table was computed from, with the
    evaluations of its checkpoints after it (kind eval); then the runs of ``without_row``,
    groups none of whose runs has completed (failed, or still in progress). Paths relative
    to the report."""
    columns = ["group", "kind", "status", "seed", "train_steps", "train_cpu_seconds",
               "train_wall_seconds", "test_mean", "test_ci95", "val_best", "evaluation",
               "checkpoint", "commit", "finished", "error", "path"]  # fmt: skip
    base = path.parent
    listed = [(row.group, run, status) for row, run, status in listed_runs(rows)]
    listed += [(group, run, status) for group in without_row for run, status in entries(group)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for group, run, status in listed:
            writer.writerow(
                [
                    group.label,
                    "eval" if run.is_eval else "train",
                    status,
                    run.config.get("seed"),
                    run.train.get("steps"),
                    run.train.get("cpu_seconds"),
                    run.train.get("wall_seconds"),
                    run.test_mean,
                    run.test_ci95,
                    run.val_best,
                    group.evaluation or "",
                    relative(run.checkpoint, base) if run.checkpoint else "",
                    run.commit or "",
                    finished_text(run),
                    run.error or "",
                    relative(run.path, base),
                ]
            )
