"""Charts drawn on the server as SVG: no script, nothing fetched, readable without colour."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 170
BAR_WIDTH = 300
COUNT_WIDTH = 70


def bar_chart(items: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """A horizontal bar chart, one labelled bar per item, its count written beside it."""
    largest = max((count for _, count in items), default=0) or 1
    height = len(items) * (BAR_HEIGHT + GAP) + GAP
    width = LABEL_WIDTH + BAR_WIDTH + COUNT_WIDTH
    rows = []
    for index, (label, count) in enumerate(items):
        y = GAP + index * (BAR_HEIGHT + GAP)
        length = round(BAR_WIDTH * count / largest)
        middle = y + BAR_HEIGHT / 2
        rows.append(
            f'<g data-label="{escape(label)}" data-count="{count}">'
            f'<text x="{LABEL_WIDTH - 8}" y="{middle}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{max(length, 1)}" height="{BAR_HEIGHT}" '
            f'class="bar bar-{escape(label)}"></rect>'
            f'<text x="{LABEL_WIDTH + max(length, 1) + 6}" y="{middle}" '
            f'dominant-baseline="middle">{count}</text></g>'
        )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(rows)
        + "</svg>"
    )
