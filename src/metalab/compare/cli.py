"""``metalab-compare PATH...``: compare every run under the given run or sweep directories.

Writes comparison.md, comparison.csv, runs.csv, the PNG plots and comparison.html into
``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from metalab.compare.discover import find_run_dirs
from metalab.compare.groups import group_runs
from metalab.compare.html import write_html
from metalab.compare.load import load_run
from metalab.compare.plots import plot_test_vs_published, plot_validation_curves
from metalab.compare.rows import build_rows
from metalab.compare.tables import print_table, write_csv, write_markdown, write_runs_csv
from metalab.errors import MetalabError


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
    return parser.parse_args(argv)


def compare(args: argparse.Namespace, console: Console) -> int:
    runs = [load_run(d) for d in find_run_dirs(args.paths)]
    groups = group_runs(runs, args.by, tuple(args.ignore))
    rows = build_rows(groups)
    failed = sum(len(g.failed) for g in groups)
    if not rows:
        raise MetalabError(
            f"none of the {len(runs)} runs found has completed: there is nothing to compare yet."
        )
    args.out.mkdir(parents=True, exist_ok=True)
    print_table(rows, console)
    write_markdown(rows, args.out / "comparison.md")
    write_csv(rows, args.out / "comparison.csv")
    write_runs_csv(rows, [], args.out / "runs.csv")
    images = []
    if plot_validation_curves(rows, args.out / "validation_curves.png"):
        images.append(args.out / "validation_curves.png")
    for metric in sorted({row.metric for row in rows}):
        png = args.out / f"test_{metric}.png"
        plot_test_vs_published([r for r in rows if r.metric == metric], png)
        images.append(png)
    write_html(rows, images, [r.path for r in runs], args.out / "comparison.html")
    console.print(
        f"{len(runs)} runs ({failed} not completed) in {len(rows)} groups; "
        f"report in {args.out}/ (comparison.html, .md, .csv, runs.csv, "
        f"{', '.join(p.name for p in images)})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        return compare(args, console)
    except MetalabError as error:
        print(f"metalab-compare: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
