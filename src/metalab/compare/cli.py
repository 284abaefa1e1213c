"""``metalab-compare PATH...``: compare every run under the given run or sweep directories.

Writes comparison.md, comparison.csv, runs.csv, time_to_accuracy.csv, the PNG plots and
comparison.html into ``--out`` and prints the header and the table. A ``metalab-eval``
result is shown under the runs whose checkpoint it tested, never as a further seed; a
training run that has not ended is listed apart with its progress (progress.py,
in_progress.csv), never in the means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from metalab.compare import progress
from metalab.compare.discover import find_run_dirs
from metalab.compare.groups import group_runs
from metalab.compare.header import PATHS_NOTE, report_header, title
from metalab.compare.html import section, write_html
from metalab.compare.load import MalformedRun, Run, load_run
from metalab.compare.plots import (
    plot_adaptation_curves,
    plot_metric_vs_cpu_time,
    plot_progress_curves,
    plot_test_vs_published,
    plot_validation_curves,
)
from metalab.compare.rows import build_rows
from metalab.compare.tables import (
    print_table,
    write_csv,
    write_markdown,
    write_runs_csv,
)
from metalab.compare.timing import (
    DEFAULT_ACC_THRESHOLDS,
    LEGEND,
    Threshold,
    append_markdown,
    group_columns,
    group_table,
    parse_thresholds,
    print_time_table,
    run_table,
    write_runs_time_csv,
)
from metalab.errors import ConfigError, MetalabError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="metalab-compare",
        description="Compare metalab runs: group by the config keys that differ, aggregate "
        "over seeds, and set the result beside published numbers.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("comparison"),
        help="where to write the report (default: ./comparison)",
    )
    parser.add_argument(
        "--by",
        nargs="+",
        default=None,
        metavar="KEY",
        help="group by these config keys (e.g. algorithm.name) instead of "
        "by every key that differs",
    )
    parser.add_argument(
        "--ignore",
        nargs="+",
        default=[],
        metavar="KEY",
        help="config keys that should not split groups",
    )
    parser.add_argument(
        "--thresholds",
        default=",".join(f"{t:g}" for t in DEFAULT_ACC_THRESHOLDS),
        metavar="A,B,...",
        help="validation accuracies whose first time reached is reported, as fractions or "
        "in %% (default: %(default)s; 'none' for none)",
    )
    parser.add_argument(
        "--mse-thresholds",
        default=None,
        metavar="A,B,...",
        help="validation MSEs (at or below) whose first time reached is reported (default: none)",
    )
    return parser.parse_args(argv)


def thresholds(args: argparse.Namespace) -> list[Threshold]:
    """The accuracy and MSE thresholds asked for, refused in one sentence if malformed."""
    try:
        return parse_thresholds(args.thresholds, "acc") + parse_thresholds(
            args.mse_thresholds, "mse"
        )
    except ValueError:
        raise ConfigError(
            f"--thresholds {args.thresholds!r} / --mse-thresholds {args.mse_thresholds!r}: "
            "give comma-separated numbers, e.g. --thresholds 0.9,0.95,0.97."
        ) from None


def check_out(out: Path) -> None:
    """``--out`` is the report's folder; an existing file is refused before anything is read
    (the report's files would otherwise be written "into" it with a traceback)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out} is a file, and --out must be a folder (created if missing): name a "
            "new or existing folder, e.g. --out comparison."
        )


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"--out {out} cannot be created ({error.strerror or error}): --out must be a folder "
            "you can write to."
        ) from None


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Every run that can be read; a malformed one is skipped with one warning line naming its
    file, so one bad results.json does not stop the comparison of the others."""
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir))
        except MalformedRun as error:
            print(f"metalab: warning: skipped {error}; repair or remove it.", file=sys.stderr)
    if not runs:
        raise MetalabError(
            f"none of the {len(run_dirs)} results.json found can be read (see the warnings "
            "above): repair them, or point metalab-compare at other runs."
        )
    return runs


def compare(args: argparse.Namespace, console: Console) -> int:
    asked = thresholds(args)
    check_out(args.out)
    run_dirs = find_run_dirs(args.paths)
    runs = load_runs(run_dirs)
    skipped = len(run_dirs) - len(runs)
    groups = group_runs(runs, args.by, tuple(args.ignore))
    rows = build_rows(groups)
    running = progress.in_progress(groups)
    metrics = {row.metric for row in rows} | {run.metric for _, run in running}
    targets = [t for t in asked if t.metric in metrics]
    failed = sum(len(g.failed) for g in groups)
    if not rows and not running:
        raise MetalabError(
            f"none of the {len(runs)} runs found has completed: there is nothing to compare yet."
        )
    make_out(args.out)
    header = report_header(groups, skipped)
    name = title(groups)
    out = args.out
    if rows:
        print_table(rows, console, header)
        print_time_table(rows, targets, console)
    else:
        for field, text in header:
            console.print(f"[bold]{field}:[/bold] {text}", highlight=False)
    progress.print_progress(groups, targets, console, out)
    write_markdown(rows, out / "comparison.md", name, [*header, PATHS_NOTE])
    if rows:
        append_markdown(rows, targets, out / "comparison.md")
    progress.append_markdown(groups, targets, out / "comparison.md")
    write_csv(rows, out / "comparison.csv", extra=lambda row: group_columns(row, targets))
    unlisted = [g for g in groups if not g.runs and g.evaluation is None]
    write_runs_csv(rows, unlisted, out / "runs.csv")
    write_runs_time_csv(rows, targets, out / "time_to_accuracy.csv")
    tables = ["comparison.html", ".md", ".csv", "runs.csv", "time_to_accuracy.csv"]
    if progress.write_progress_csv(groups, targets, out / "in_progress.csv"):
        tables.append("in_progress.csv")
    images = []
    if plot_validation_curves(rows, out / "validation_curves.png"):
        images.append(out / "validation_curves.png")
    if plot_adaptation_curves(rows, out / "adaptation_curves.png"):
        images.append(out / "adaptation_curves.png")
    for metric in sorted({row.metric for row in rows}):
        png = out / f"test_{metric}.png"
        plot_test_vs_published([r for r in rows if r.metric == metric], png)
        images.append(png)
    if plot_metric_vs_cpu_time(rows, targets, out / "val_vs_cpu_time.png"):
        images.append(out / "val_vs_cpu_time.png")
    labelled = [(group.label, run) for group, run in running]
    if plot_progress_curves(labelled, targets, out / "progress_curves.png"):
        images.append(out / "progress_curves.png")
    sections = []
    if rows:
        sections += [
            section("Budget and time to accuracy", LEGEND, *group_table(rows, targets)),
            section("Time to accuracy per run", "", *run_table(rows, targets)),
        ]
    if running:
        sections.append(
            section(progress.TITLE, progress.NOTE, *progress.progress_table(groups, targets, out))
        )
    write_html(rows, images, [r.path for r in runs], out / "comparison.html", sections,
               [*header, PATHS_NOTE], name)  # fmt: skip
    evaluations = sum(1 for run in runs if run.is_eval)
    console.print(
        f"{len(runs) - evaluations} runs ({failed} not completed"
        f"{f', {len(running)} in progress' if running else ''}"
        f"{f', {skipped} malformed skipped' if skipped else ''}) in "
        f"{sum(1 for g in groups if g.evaluation is None)} groups"
        f"{f', {evaluations} evaluations of their checkpoints' if evaluations else ''}; "
        f"report in {out}/ ({', '.join([*tables, *(p.name for p in images)])})",
        highlight=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        return compare(args, console)
    except MetalabError as error:
        print(f"metalab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
