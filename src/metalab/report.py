"""What the user sees at the end of a run: the test result as a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_test_summary(summary: dict[str, Any], protocol: dict[str, Any], where: Path) -> None:
    metric = summary["metric"]
    table = Table(title=f"test {metric}, {summary['tasks']} tasks, mean +- 95% CI")
    table.add_column("inner steps", justify="right")
    table.add_column(metric, justify="right")
    scale = 100.0 if metric == "acc" else 1.0
    unit = " %" if metric == "acc" else ""
    for row in summary["per_step"]:
        table.add_row(
            str(row["step"]), f"{scale * row['mean']:.3f} +- {scale * row['ci95']:.3f}{unit}"
        )
    console = Console()
    console.print(table)
    shown = ", ".join(f"{k}={v}" for k, v in protocol.items())
    console.print(f"protocol: {shown}")
    console.print(f"results: {where}")
