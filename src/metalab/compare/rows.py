"""The comparison table's rows: one per group, in the unit papers report (accuracy in %)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalab.compare.groups import Group
from metalab.compare.published import Published, gap, lookup, outside_published_ci, scale


@dataclass
class Row:
    group: Group
    metric: str
    unit: str
    test_mean: float
    test_ci95: float | None
    val_best_mean: float | None
    published: Published | None
    outside_ci: bool | None
    gap: float | None = None  # ours minus the paper's, in the published unit (points for %)

    def as_dict(self) -> dict[str, Any]:
        """Flat, stable columns for CSV and Markdown."""
        p = self.published
        group = self.group
        record: dict[str, Any] = {"group": group.label}
        record.update({k: v for k, v in group.key.items()})
        record.update(
            kind="eval" if group.evaluation is not None else "train",
            evaluation=group.evaluation,
            evaluated_group=group.source.label if group.source else None,
            metric=f"test/{self.metric}",
            unit=self.unit,
            runs=len(group.runs),
            failed=len(group.failed),
            seeds=" ".join(str(s) for s in group.seeds),
            repeated_evaluations=len(group.repeats),
            test_mean=self.test_mean,
            test_ci95=self.test_ci95,
            val_best_mean=self.val_best_mean,
            published=p.mean if p else None,
            published_ci95=p.ci95 if p else None,
            published_method=p.method if p else None,
            published_source=p.source if p else None,
            published_interval=p.interval if p and p.ci95 is not None else None,
            gap_to_published=self.gap,
            outside_published_ci=self.outside_ci,
        )
        return record


def build_rows(groups: list[Group]) -> list[Row]:
    rows = []
    for group in groups:
        if not group.runs:
            continue
        metric = group.metric or "?"
        factor = scale(metric)
        mean, ci = group.test()
        val_mean, _ = group.val_best()
        first = group.runs[0]
        published = lookup(first.config, first.protocol)
        shown = factor * mean if mean is not None else float("nan")
        rows.append(
            Row(
                group=group,
                metric=metric,
                unit="%" if metric == "acc" else metric,
                test_mean=shown,
                test_ci95=factor * ci if ci is not None else None,
                val_best_mean=factor * val_mean if val_mean is not None else None,
                published=published,
                outside_ci=outside_published_ci(shown, published) if published else None,
                gap=gap(shown, published) if published and mean is not None else None,
            )
        )
    return rows
