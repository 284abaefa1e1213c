"""One self-contained HTML page: the table and the plots inlined as data URIs, so the file
can be mailed or opened offline and shows the same thing everywhere."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from metalab.compare.rows import Row
from metalab.compare.tables import display_rows

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: left; font-size: 13px; }
th { background: #eee; }
tr.outside td { background: #fdd; }
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


def write_html(
    rows: list[Row],
    images: list[Path],
    sources: list[Path],
    path: Path,
    sections: tuple[str, ...] | list[str] = (),
) -> None:
    """``sections``: further tables already rendered by :func:`section`, shown after the
    main one and before the plots."""
    header, cells = display_rows(rows)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for line, row in zip(cells, rows, strict=True):
        css = ' class="outside"' if row.outside_ci else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>")
    figures = "\n".join(
        f'<figure><img alt="{esc(png.stem)}" src="{data_uri(png)}">'
        f"<figcaption>{esc(png.name)}</figcaption></figure>"
        for png in images
    )
    listed = "".join(f"<li>{esc(str(s))}</li>" for s in sources)
    path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>metalab-compare</title><style>{STYLE}</style></head><body>"
        "<h1>metalab-compare</h1>"
        "<p>Test metric over seeds: mean ± 95% CI (Student's t over seeds; one seed: the "
        "run's own CI over test tasks). Accuracy in %.</p>"
        f'<table id="comparison"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>\n{''.join(sections)}{figures}\n"
        f"<h2>Compared</h2><ul>{listed}</ul></body></html>\n"
    )
