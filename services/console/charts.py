"""Charts drawn on the server as SVG (no JavaScript, no CDN). Pure.

Every chart is role="img" with a <title> and an aria-label, so a screen
reader says what it shows; the numbers are also written in the cells.
"""
from __future__ import annotations

from markupsafe import Markup, escape

from .views import Matrix

CELL_W, CELL_H, HEAD_W, HEAD_H = 120, 30, 150, 34


def _shade(count: int, peak: int) -> str:
    """White to a deep blue by share of the peak; integer arithmetic."""
    if peak <= 0 or count <= 0:
        return "#ffffff"
    level = 40 + 215 * count // peak  # 40..255
    r = 255 - level * 220 // 255
    g = 255 - level * 150 // 255
    return f"#{r:02x}{g:02x}ff"


def heatmap(m: Matrix, title: str, from_label: str, to_label: str) -> Markup:
    """The migration matrix: a row per outcome in force, a column per candidate outcome."""
    width = HEAD_W + CELL_W * max(1, len(m.cols)) + 4
    height = HEAD_H * 2 + CELL_H * max(1, len(m.rows)) + 4
    e = escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{e(title)}">',
             f"<title>{e(title)}</title>",
             f'<text x="{HEAD_W}" y="14" class="axis">{e(to_label)} →</text>',
             f'<text x="2" y="{HEAD_H + 20}" class="axis">{e(from_label)} ↓</text>']
    for j, col in enumerate(m.cols):
        x = HEAD_W + j * CELL_W
        parts.append(f'<text x="{x + CELL_W // 2}" y="{HEAD_H + 20}" text-anchor="middle" class="head">{e(col)}</text>')
    for i, row in enumerate(m.rows):
        y = HEAD_H * 2 + i * CELL_H
        parts.append(f'<text x="{HEAD_W - 6}" y="{y + 20}" text-anchor="end" class="head">{e(row)}</text>')
        for j, col in enumerate(m.cols):
            x = HEAD_W + j * CELL_W
            n = m.counts.get((row, col), 0)
            dark = m.peak and n * 2 > m.peak
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 2}" height="{CELL_H - 2}" '
                         f'fill="{_shade(n, m.peak)}" stroke="#c8cdd6"><title>{e(row)} → {e(col)}: {n}</title></rect>')
            parts.append(f'<text x="{x + CELL_W // 2}" y="{y + 20}" text-anchor="middle" '
                         f'fill="{"#ffffff" if dark else "#1b2330"}">{n}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def fill_bar(size: int, max_size: int, title: str, width: int = 240) -> Markup:
    """A book's fill against its max (a grey track; red when full). No max: a plain count."""
    e = escape
    if max_size > 0:
        used = min(width, width * size // max_size)
        colour = "#c0392b" if size >= max_size else "#2e6fd8"
    else:
        used, colour = 0, "#2e6fd8"
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" class="fill" role="img" width="{width}" height="14" '
                  f'viewBox="0 0 {width} 14" aria-label="{e(title)}"><title>{e(title)}</title>'
                  f'<rect x="0" y="0" width="{width}" height="14" fill="#e6e9ef"/>'
                  f'<rect x="0" y="0" width="{used}" height="14" fill="{colour}"/></svg>')


BAR_LABEL_W, BAR_W, BAR_H, BAR_GAP, BAR_VALUE_W = 170, 320, 22, 8, 150


def bars(items: list[tuple[str, int, str]], title: str) -> Markup:
    """Horizontal bars, one per (label, value, value text), scaled to the largest value."""
    e = escape
    peak = max((v for _, v, _ in items), default=0)
    height = max(1, len(items)) * (BAR_H + BAR_GAP) + BAR_GAP
    width = BAR_LABEL_W + BAR_W + BAR_VALUE_W
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="{e(title)}"><title>{e(title)}</title>']
    for i, (label, value, text) in enumerate(items):
        y = BAR_GAP + i * (BAR_H + BAR_GAP)
        length = BAR_W * max(0, value) // peak if peak > 0 else 0
        parts.append(f'<text x="{BAR_LABEL_W - 8}" y="{y + 16}" text-anchor="end" class="head">{e(_short(label))}</text>'
                     f'<rect x="{BAR_LABEL_W}" y="{y}" width="{length}" height="{BAR_H}" fill="#2e6fd8">'
                     f'<title>{e(label)}: {e(text)}</title></rect>'
                     f'<text x="{BAR_LABEL_W + length + 6}" y="{y + 16}" class="value">{e(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


MAX_LABEL = 18  # characters


def _short(label: str) -> str:
    """A label that fits left of the bars; the whole one is in the bar's <title>."""
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…"


def shares(items: list[tuple[str, int, int, str]], title: str, left: bool = False) -> Markup:
    """One track per (label, part, total, text): the part filled against the total. A fill
    (left=False: book fill by role) is red at or over the total; what is left (left=True:
    stock, budget) is red when nothing is."""
    e = escape
    height = max(1, len(items)) * (BAR_H + BAR_GAP) + BAR_GAP
    width = BAR_LABEL_W + BAR_W + BAR_VALUE_W
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="{e(title)}"><title>{e(title)}</title>']
    for i, (label, used, total, text) in enumerate(items):
        y = BAR_GAP + i * (BAR_H + BAR_GAP)
        length = min(BAR_W, BAR_W * max(0, used) // total) if total > 0 else 0
        alarm = used <= 0 if left else total > 0 and used >= total
        colour = "#c0392b" if alarm else "#2e6fd8"
        mark = ' fill="#c0392b" font-weight="bold"' if alarm else ""  # an empty bar still shows the alarm
        parts.append(f'<text x="{BAR_LABEL_W - 8}" y="{y + 16}" text-anchor="end" class="head">{e(_short(label))}</text>'
                     f'<rect x="{BAR_LABEL_W}" y="{y}" width="{BAR_W}" height="{BAR_H}" fill="#e6e9ef"><title>{e(label)}: {e(text)}</title></rect>'
                     f'<rect x="{BAR_LABEL_W}" y="{y}" width="{length}" height="{BAR_H}" fill="{colour}">'
                     f'<title>{e(label)}: {e(text)}</title></rect>'
                     f'<text x="{BAR_LABEL_W + BAR_W + 6}" y="{y + 16}" class="value"{mark}>{e(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
