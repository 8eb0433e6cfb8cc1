"""``sakura compare --html``: one self-contained page (no network, no script library) with the comparison
table and its plots: each curve series (training loss, reward margin, ...) per variant as an SVG line
chart, and each metric per variant as an SVG bar chart. A few lines of script sort the table when a header
is clicked.
"""

from __future__ import annotations

import html
from typing import Any

from sakura_core.compare import Comparison, text

PALETTE = ("#d6336c", "#1c7ed6", "#37b24d", "#f59f00", "#7048e8", "#0c8599", "#e8590c", "#495057")
WIDTH, HEIGHT, PAD = 560, 260, 42

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; cursor: pointer; } td:first-child, th:first-child { text-align: left; }
td.setting { color: #555; } td.best { font-weight: bold; background: #e6fcf5; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; } figure { margin: 0; }
figcaption { font-size: 0.9em; margin-bottom: 0.3em; } svg text { font-size: 11px; fill: #444; }
.legend span { display: inline-block; margin-right: 1em; font-size: 0.85em; }
"""

SCRIPT = """
document.querySelectorAll("table.comparison th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.from(body.rows);
    var down = th.dataset.order !== "desc";
    rows.sort(function (a, b) {
      var x = parseFloat(a.cells[column].dataset.value), y = parseFloat(b.cells[column].dataset.value);
      if (isNaN(x) || isNaN(y)) { return a.cells[column].textContent.localeCompare(b.cells[column].textContent); }
      return down ? y - x : x - y;
    });
    th.dataset.order = down ? "desc" : "asc";
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
document.body.dataset.ready = "yes";
"""


def render(comparison: Comparison, order: list[str]) -> str:
    colours = {variant: PALETTE[i % len(PALETTE)] for i, variant in enumerate(comparison.rows)}
    parts = [f"<h1>{html.escape(comparison.recipe)}: {len(comparison.rows)} variants</h1>", _table(comparison, order),
             _legend(colours)]
    if comparison.curves:
        parts.append("<h2>Training</h2><div class=\"charts\">")
        parts += [_line_chart(series, by_variant, colours) for series, by_variant in comparison.curves.items()]
        parts.append("</div>")
    metrics = [c for c in comparison.columns if c.kind == "metric"]
    if metrics:
        parts.append("<h2>Scores</h2><div class=\"charts\">")
        parts += [_bar_chart(c.name, {v: comparison.rows[v].get(c.name) for v in order}, colours, c.higher_is_better)
                  for c in metrics]
        parts.append("</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(comparison.recipe)}: variants compared</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + f"<script>{SCRIPT}</script></body></html>\n")


def _table(comparison: Comparison, order: list[str]) -> str:
    best = comparison.best()
    head = "".join(f"<th>{html.escape(c.name)}</th>" for c in comparison.columns)
    rows = []
    for variant in order:
        row = comparison.rows[variant]
        cells = []
        for c in comparison.columns:
            value = row.get(c.name)
            classes = [c.kind] + (["best"] if best[c.name] is not None and value == best[c.name] else [])
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            cells.append(f"<td class=\"{' '.join(classes)}\" data-value=\"{number}\">{html.escape(text(value))}</td>")
        rows.append(f"<tr><td>{html.escape(variant)}</td>{''.join(cells)}</tr>")
    return (f"<table class=\"comparison\"><thead><tr><th>variant</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _legend(colours: dict[str, str]) -> str:
    spans = "".join(f"<span style=\"color:{c}\">&#9632; {html.escape(v)}</span>" for v, c in colours.items())
    return f"<p class=\"legend\">{spans}</p>"


def _scale(lo: float, hi: float, size: float, flip: bool) -> Any:
    span = (hi - lo) or 1.0

    def at(value: float) -> float:
        share = (value - lo) / span
        return PAD + (1 - share if flip else share) * (size - 2 * PAD)

    return at


def _line_chart(series: str, by_variant: dict[str, list[tuple[float, float]]], colours: dict[str, str]) -> str:
    points = [p for pts in by_variant.values() for p in pts]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_at, y_at = _scale(min(xs), max(xs), WIDTH, False), _scale(min(ys), max(ys), HEIGHT, True)
    lines = []
    for variant, pts in by_variant.items():
        coords = " ".join(f"{x_at(x):.1f},{y_at(y):.1f}" for x, y in pts)
        lines.append(f"<polyline class=\"series\" data-variant=\"{html.escape(variant)}\" fill=\"none\" "
                     f"stroke=\"{colours[variant]}\" stroke-width=\"2\" points=\"{coords}\"/>")
    axes = _axes(f"step {min(xs):g}–{max(xs):g}", f"{min(ys):.4g}", f"{max(ys):.4g}")
    return (f"<figure><figcaption>{html.escape(series)} per step</figcaption>"
            f"<svg class=\"chart line\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
            f"{axes}{''.join(lines)}</svg></figure>")


def _bar_chart(metric: str, values: dict[str, Any], colours: dict[str, str], higher_is_better: bool | None) -> str:
    present = {v: float(x) for v, x in values.items() if isinstance(x, (int, float)) and not isinstance(x, bool)}
    if not present:
        return ""
    lo, hi = min(0.0, *present.values()), max(0.0, *present.values())
    y_at = _scale(lo, hi, HEIGHT, True)
    slot = (WIDTH - 2 * PAD) / len(present)
    bars = []
    for i, (variant, value) in enumerate(present.items()):
        top, base = sorted((y_at(value), y_at(0.0)))
        x = PAD + i * slot + slot * 0.15
        bars.append(f"<rect class=\"bar\" data-variant=\"{html.escape(variant)}\" x=\"{x:.1f}\" y=\"{top:.1f}\" "
                    f"width=\"{slot * 0.7:.1f}\" height=\"{max(base - top, 0.5):.1f}\" fill=\"{colours[variant]}\">"
                    f"<title>{html.escape(variant)}: {value:.4g}</title></rect>")
    better = "" if higher_is_better is None else (" (higher is better)" if higher_is_better else " (lower is better)")
    axes = _axes("variants", f"{lo:.4g}", f"{hi:.4g}")
    return (f"<figure><figcaption>{html.escape(metric)}{better}</figcaption>"
            f"<svg class=\"chart bars\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
            f"{axes}{''.join(bars)}</svg></figure>")


def _axes(x_label: str, y_low: str, y_high: str) -> str:
    return (f"<line x1=\"{PAD}\" y1=\"{HEIGHT - PAD}\" x2=\"{WIDTH - PAD}\" y2=\"{HEIGHT - PAD}\" stroke=\"#999\"/>"
            f"<line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{HEIGHT - PAD}\" stroke=\"#999\"/>"
            f"<text x=\"{WIDTH / 2}\" y=\"{HEIGHT - 12}\" text-anchor=\"middle\">{html.escape(x_label)}</text>"
            f"<text x=\"4\" y=\"{HEIGHT - PAD}\">{html.escape(y_low)}</text><text x=\"4\" y=\"{PAD}\">{html.escape(y_high)}</text>")
