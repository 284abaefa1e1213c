"""One self-contained HTML page: the table and the plots inlined as data URIs, so the file
can be mailed or opened offline and shows the same thing everywhere."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote

from metalab.compare.rows import Row
from metalab.compare.tables import NONE_COMPLETED, display_rows, relative, run_lines

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: left; font-size: 13px; }
th { background: #eee; }
tr.outside td { background: #fdd; }
tr.eval td { font-style: italic; color: #444; }
tr.eval td:first-child { padding-left: 1.5em; }
dl#header { display: grid; grid-template-columns: max-content auto; gap: 2px 12px;
            font-size: 14px; margin-bottom: 1.5em; }
dl#header dt { font-weight: bold; }
dl#header dd { margin: 0; }
figcaption { font-size: 13px; color: #444; margin-bottom: 2em; }
img { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1.5em; }
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def section(title: str, note: str, header: list[str], cells: list[list[str]]) -> str:
    """A further table (budget, time to accuracy) under its own heading."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>" for line in cells)
    return (
        f"<h2>{esc(title)}</h2>" + (f"<p>{esc(note)}</p>" if note else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
    )  # fmt: skip


def header_list(header: list[tuple[str, str]]) -> str:
    esc = html.escape
    items = "".join(f"<dt>{esc(field)}</dt><dd>{esc(text)}</dd>" for field, text in header)
    return f'<dl id="header">{items}</dl>'


def write_html(
    rows: list[Row],
    images: list[Path],
    sources: list[Path],
    path: Path,
    sections: tuple[str, ...] | list[str] = (),
    header: list[tuple[str, str]] = (),
    title: str = "metalab-compare",
) -> None:
    """``sections``: further tables already rendered by :func:`section`, shown after the
    main one and before the plots; ``sources``: the runs' folders, linked relative to the
    page (the page and the runs can move together)."""
    head_cells, cells = display_rows(rows)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in head_cells)
    body = []
    for line, row in zip(cells, rows, strict=True):
        classes = ["outside"] if row.outside_ci else []
        classes += ["eval"] if row.group.evaluation is not None else []
        css = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>")
    figures = "\n".join(
        f'<figure><img alt="{esc(png.stem)}" src="{data_uri(png)}">'
        f"<figcaption>{esc(caption(png))}</figcaption></figure>"
        for png in images
    )
    base = path.parent
    listed = "".join(
        f'<li><a href="{esc(quote(relative(target(s), base), safe="/,="))}">'
        f"{esc(relative(s, base))}</a></li>"
        for s in sources
    )
    runs = section("Runs", RUNS_NOTE, *run_lines(rows, base)) if rows else ""
    path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{header_list(header)}"
        "<p>Test metric over seeds: mean ± 95% CI (Student's t over seeds; one seed: the "
        "run's own CI over test tasks). Accuracy in %. Rows marked ↳ are metalab-eval "
        "results of the checkpoints of the runs above them: one per checkpoint, not seeds."
        "</p>"
        + (
            f'<table id="comparison"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>\n"
            if rows
            else f"<p>{esc(NONE_COMPLETED)}</p>\n"
        )
        + f"{runs}{''.join(sections)}{figures}\n"
        f"<h2>Compared</h2><ul>{listed}</ul></body></html>\n"
    )


def target(run_dir: Path) -> Path:
    """What a run's link opens: its results.json, or its folder while it has none."""
    return run_dir / "results.json" if (run_dir / "results.json").exists() else run_dir


RUNS_NOTE = (
    "Every run: its outer steps, training CPU and wall time, its own test result (95% CI "
    "over its test tasks), the commit that ran it and its folder; the evaluations of its "
    "checkpoints under it."
)
CAPTIONS = {
    "validation_curves": "Validation metric after each validated outer step, mean over seeds "
    "(band: min-max over seeds).",
    "adaptation_curves": "Test-time adaptation: the test metric after each inner step on the "
    "test tasks' support sets (band: 95% CI; dashed: metalab-eval of the runs' checkpoints; "
    "dotted: a method without inner steps).",
    "val_vs_cpu_time": "Validation metric against training CPU time, one line per run; "
    "crosses: first time each threshold was reached.",
    "progress_curves": "Runs in progress: their validation metric so far, over outer steps "
    "and over training CPU time (dashed: the thresholds).",
}


def caption(png: Path) -> str:
    if png.stem.startswith("test_"):
        return (
            f"Test {png.stem[5:]} per group, mean ± 95% CI, beside the published number for "
            "the same method and setting (and other published methods, dotted)."
        )
    return CAPTIONS.get(png.stem, png.name)
