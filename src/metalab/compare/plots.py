"""PNG plots: validation curves per group (over steps and over training CPU time), and test
results next to the published ones."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metalab.compare.published import CONTEXT, scale  # noqa: E402
from metalab.compare.rows import Row  # noqa: E402
from metalab.compare.timing import Threshold, first_reached, on_gpu, timed  # noqa: E402


def plot_validation_curves(rows: list[Row], path: Path) -> bool:
    """Mean validation metric over seeds at each step, the band spanning the seeds."""
    metrics = sorted({row.metric for row in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    drawn = False
    for ax, metric in zip(axes[0], metrics, strict=True):
        factor = scale(metric)
        for row in (r for r in rows if r.metric == metric):
            curves = [dict(run.curve) for run in row.group.runs if run.curve]
            steps = sorted(set().union(*curves)) if curves else []
            if not steps:
                continue
            values = (
                np.array([[c.get(s, np.nan) for s in steps] for c in curves], dtype=float) * factor
            )
            mean = np.nanmean(values, axis=0)
            line = ax.plot(steps, mean, marker="o", ms=3, label=row.group.label)[0]
            if len(curves) > 1:
                low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
            drawn = True
        ax.set_xlabel("meta-training step")
        ax.set_ylabel(f"validation {metric}" + (" %" if metric == "acc" else ""))
        ax.set_title(f"val/{metric}: mean over seeds (band: min-max)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_test_vs_published(rows: list[Row], path: Path) -> None:
    """Our test metric (95% CI over seeds) beside the published number for the same setting;
    ``rows`` share one metric."""
    labels, ours, ours_err, pubs, pub_err, colors = [], [], [], [], [], []
    for row in rows:
        labels.append(row.group.label)
        ours.append(row.test_mean)
        ours_err.append(row.test_ci95 or 0.0)
        pubs.append(row.published.mean if row.published else np.nan)
        pub_err.append((row.published.ci95 or 0.0) if row.published else 0.0)
        colors.append("tab:red" if row.outside_ci else "tab:blue")
    context = contextual(rows)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * (len(labels) + len(context))), 4.8))
    ax.bar(x - 0.2, ours, 0.4, yerr=ours_err, capsize=4, color=colors, label="metalab (this run)")
    if not np.all(np.isnan(pubs)):
        ax.bar(x + 0.2, pubs, 0.4, yerr=pub_err, capsize=4, color="tab:gray", label="published")
    for i, published in enumerate(context, start=len(labels)):
        ax.bar(
            i,
            published.mean,
            0.4,
            yerr=published.ci95 or 0.0,
            capsize=4,
            color="lightgray",
            hatch="//",
        )
        labels.append(f"{published.method}\n(published)")
    ax.set_xticks(np.arange(len(labels)), labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(f"test {rows[0].metric}" + (" %" if rows[0].metric == "acc" else ""))
    if rows[0].metric == "acc":  # accuracies sit near the top: do not waste the axis on 0-80%
        lows = [m - e for m, e in zip(ours + pubs, ours_err + pub_err, strict=True)]
        lows += [p.mean - (p.ci95 or 0.0) for p in context]
        ax.set_ylim(max(0.0, np.nanmin(lows) - 5.0), 100.0)
    ax.set_title("test metric, 95% CI (red: outside the published CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contextual(rows: list[Row]):
    """Other methods' Omniglot numbers for the one ways/shots setting all rows share."""
    settings = {
        (row.group.runs[0].protocol.get("ways"), row.group.runs[0].protocol.get("shots"))
        for row in rows
        if row.group.runs[0].config.get("dataset.name") == "omniglot"
    }
    if len(settings) != 1 or any(
        r.group.runs[0].config.get("dataset.name") != "omniglot" for r in rows
    ):
        return []
    return CONTEXT.get(next(iter(settings)), [])


def plot_metric_vs_cpu_time(rows: list[Row], thresholds: list[Threshold], path: Path) -> bool:
    """Validation metric against training CPU time, one line per run coloured by group, the
    thresholds as dashed lines and each first crossing marked: a faster engine or a better
    recipe shows up as a curve further left. False (no file) when no run logged its time."""
    metrics = sorted({row.metric for row in rows if any(map(timed, row.group.runs))})
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        shown = [r for r in rows if r.metric == metric]
        seconds = [x for r in shown for run in r.group.runs for x, _ in time_points(run)]
        seconds = seconds or [1.0]
        unit = 3600.0 if max(seconds) > 7200 else 1.0  # hours past two hours
        draw_time_curves(ax, shown, thresholds, unit)
        if min(seconds) > 0 and max(seconds) / min(seconds) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"training CPU {'hours' if unit > 1 else 'seconds'} (all threads)")
        ax.set_ylabel(f"validation {metric}" + (" %" if metric == "acc" else ""))
        gpu = any(on_gpu(run) for r in shown for run in r.group.runs)
        ax.set_title(
            f"val/{metric} vs training CPU time" + (" (GPU runs: host CPU)" if gpu else "")
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def time_points(run) -> list[tuple[float, float]]:
    """(CPU seconds, validation metric) at each timed validation, in step order."""
    return [(run.clock[step][0], value) for step, value in sorted(dict(run.curve).items())
            if step in run.clock]  # fmt: skip


def draw_time_curves(ax, rows: list[Row], thresholds: list[Threshold], unit: float) -> None:
    """One line per timed run (the group's colour, labelled once) with x in CPU seconds /
    ``unit``, its first crossings marked, and the thresholds of this metric."""
    factor = scale(rows[0].metric)
    for index, row in enumerate(rows):
        color = f"C{index % 10}"
        label: str | None = row.group.label
        for run in row.group.runs:
            points = time_points(run)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                np.array(xs) / unit, np.array(ys) * factor,
                color=color, marker="o", ms=3, alpha=0.8, label=label,
            )  # fmt: skip
            label = None
            for threshold in thresholds:
                hit = first_reached(run, threshold)
                if hit is not None and hit.cpu_seconds is not None:
                    y = threshold.value * factor
                    ax.plot(hit.cpu_seconds / unit, y, "x", color=color, ms=7)
    for threshold in (t for t in thresholds if t.metric == rows[0].metric):
        ax.axhline(threshold.value * factor, color="gray", ls="--", lw=0.8)
        ax.annotate(threshold.label, (0, threshold.value * factor), xycoords=("axes fraction",
                    "data"), fontsize=7, color="gray", va="bottom")  # fmt: skip
