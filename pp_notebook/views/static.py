"""The final picture of a run: plain HTML + SVG that needs no kernel, widget or script.

It replaces the live widget when the run ends, so a saved notebook shows it anywhere: reopened
in JupyterLab with no kernel, in nbconvert's HTML, on nbviewer and GitHub. The summary and
per-engine tables (summary.py), the timeline and duration histogram drawn from the
dashboard's last compact state (SVG `<title>`s give the hovers), and the failures, each a
`<details>` with its traceback.

Untrusted notebooks: JupyterLab's sanitizer drops inline `<svg>` and `<style>` (and `var()`
colours) but keeps `<img>` data URIs and plain inline positions and colours. So each chart is
an `<img>` (the SVG with its fixed light colours, as a data URI) under the same SVG inline,
placed exactly over it and themed by its own `<style>`: trusted, the inline SVG shows and
hovers; untrusted, it is stripped and the image shows, the SVG's leftover text transparent.
No style is needed to choose, so one trusted picture's style cannot hide another's images.
"""

from __future__ import annotations

import base64
from html import escape

from .. import fmt
from ..summary import RunSummary, summary_html
from .state import DashboardState
from .theme import RUNNING_COLOUR, STATUS_COLOURS

WIDTH = 560
LABEL_W = 40
LANE_H = 14
LANE_GAP = 3
AXIS_H = 16
HIST_W = 240
HIST_H = 110
FAMILY_COLOURS = {"failed": STATUS_COLOURS["error"], **STATUS_COLOURS,
                  "running": RUNNING_COLOUR}
INK, LANE, PAPER = "#1a1a1a", "#eeeeee", "#ffffff"
"""Text, lane and background: the SVG's own colours (an image sees no theme)."""
THEMED = (".ppnb-chart text{fill:var(--jp-ui-font-color1, #1a1a1a);"
          "font-family:var(--jp-ui-font-family, sans-serif)}"
          ".ppnb-chart .lane{fill:var(--jp-layout-color2, #eeeeee)}"
          ".ppnb-chart .paper{fill:var(--jp-layout-color0, #ffffff)}")
"""The inline SVG's theme, over its own colours (CSS wins over SVG attributes)."""
PAGE_CSS = """
.ppnb-final {font-family: var(--jp-ui-font-family, sans-serif); font-size: 12px;
  color: var(--jp-ui-font-color1, #1a1a1a)}
.ppnb-final .ppnb-charts {display: flex; flex-wrap: wrap; gap: 24px; margin: 6px 0}
.ppnb-final pre {max-height: 24em; overflow: auto; font-size: 11px;
  background: var(--jp-layout-color2, #f3f3f3); color: var(--jp-content-font-color1, #1a1a1a);
  padding: 6px}
"""
TEXT_ATTRS = f'fill="{INK}" font-size="11" font-family="sans-serif"'


def final_picture(state: DashboardState, summary: RunSummary) -> str:
    """The whole picture: summary tables, both charts and the failures."""
    values = state.values
    parts = [f'<div class="ppnb-final"><style>{PAGE_CSS}</style>', summary_html(summary),
             '<div class="ppnb-charts">',
             _figure(f"Timeline, one lane per engine: {_legend()}", "task timeline per engine",
                     *timeline_svg(values.get("timeline", {}))),
             _figure("Task durations", "histogram of task durations",
                     *histogram_svg(values.get("histogram", {}))),
             "</div>", _failures(state, values.get("failures_more", 0)), "</div>"]
    return "\n".join(parts)


def _legend() -> str:
    """A coloured square per bar colour, then its name (inline hex colours and sizes survive
    the sanitizer; squares, not glyphs, so no text is drawn in a faint colour)."""
    return " ".join(f'<span style="display:inline-block;width:0.7em;height:0.7em;'
                    f'background-color:{FAMILY_COLOURS[name]}"></span> {name}'
                    for name in ("ok", "failed", "cancelled"))


def _figure(caption: str, alt: str, body: str, width: int, height: int) -> str:
    """A chart as an image, with the same SVG inline exactly over it (see the module's
    docstring). `caption` is HTML."""
    paper = f'<rect class="paper" width="{width}" height="{height}" fill="{PAPER}"/>'
    printed = _svg(paper + body, width, height, "", alt)
    data = base64.b64encode(printed.encode()).decode()
    box = f"width:{width}px;height:{height}px"
    return (f"<div><p><b>{caption}</b></p>"
            f'<div style="position:relative;display:inline-block;{box}">'
            f'<img alt="{escape(alt)}" width="{width}" height="{height}" '
            f'src="data:image/svg+xml;base64,{data}">'
            f'<div style="position:absolute;top:0;left:0;{box};overflow:hidden;'
            f'color:transparent">{_svg(paper + body, width, height, THEMED, alt)}</div>'
            "</div></div>")


def _svg(body: str, width: int, height: int, css: str, title: str) -> str:
    style = f"<style>{css}</style>" if css else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="ppnb-chart" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f"<title>{escape(title)}</title>{style}{body}</svg>")


def timeline_svg(timeline: dict) -> tuple[str, int, int]:
    """One lane per engine, a bar per attempt (or per run of busy bins, its opacity the busy
    share), each with a `<title>`; x is seconds since the run started."""
    lanes = timeline.get("lanes", [])
    span = timeline.get("span_s") or 1.0
    scale = (WIDTH - LABEL_W - 8) / span
    height = len(lanes) * (LANE_H + LANE_GAP) + AXIS_H
    parts = []
    for row, engine in enumerate(lanes):
        y = row * (LANE_H + LANE_GAP)
        parts.append(f'<text x="0" y="{y + LANE_H - 3}" {TEXT_ATTRS}>e{engine}</text>'
                     f'<rect class="lane" x="{LABEL_W}" y="{y}" width="{WIDTH - LABEL_W - 8}" '
                     f'height="{LANE_H}" fill="{LANE}"/>')
    for bar in timeline.get("bars", []):
        lane, start, duration = bar[:3]
        x, w = LABEL_W + start * scale, max(duration * scale, 1.0)
        y = lane * (LANE_H + LANE_GAP)
        if timeline.get("mode") == "tasks":
            _, _, _, status, task, item = bar
            title = (f"task {task} · {item} · engine {lanes[lane]} · "
                     f"{fmt.seconds(duration)} · {status}")
            opacity = ""
        else:
            _, _, _, status, share, count, mix = bar
            title = bin_title(start, duration, count, mix)
            opacity = f' fill-opacity="{share}"'
        parts.append(f'<rect fill="{FAMILY_COLOURS[status]}" x="{x:.1f}" y="{y}" '
                     f'width="{w:.1f}" height="{LANE_H}"{opacity}>'
                     f"<title>{escape(title)}</title></rect>")
    axis = height - 4
    parts.append(f'<text x="{LABEL_W}" y="{axis}" {TEXT_ATTRS}>0</text>'
                 f'<text x="{WIDTH - 8}" y="{axis}" text-anchor="end" {TEXT_ATTRS}>'
                 f"{escape(fmt.seconds(span))}</text>")
    return "".join(parts), WIDTH, height


def bin_title(start: float, duration: float, count: int, mix: dict) -> str:
    """`1.2 s – 1.5 s · 40 tasks · 38 ok, 2 error`: what a merged timeline bar stands for."""
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(mix.items(),
                                                                  key=lambda kv: -kv[1]))
    tasks = f"{count} task{'s' if count != 1 else ''}"
    return " · ".join(filter(None, [f"{fmt.seconds(start)} – {fmt.seconds(start + duration)}",
                                    tasks, statuses]))


def histogram_svg(histogram: dict) -> tuple[str, int, int]:
    """Bars of the occupied log-spaced bins, failed counts stacked on ok, then cancelled;
    each bin's `<title>` gives its range and count."""
    edges = histogram.get("edges", [])
    if not edges:
        return f'<text x="0" y="14" {TEXT_ATTRS}>no task finished</text>', HIST_W, 24
    names = ("ok", "failed", "cancelled")
    totals = [sum(histogram[name][i] for name in names) for i in range(len(edges) - 1)]
    plot_h, bar_w, top = HIST_H - AXIS_H, HIST_W / len(totals), max(totals)
    parts = []
    for i, total in enumerate(totals):
        base = 0
        for name in names:
            value = histogram[name][i]
            if value:
                h = max(plot_h * value / top, 1.0)
                y = plot_h - plot_h * base / top - h
                parts.append(f'<rect fill="{FAMILY_COLOURS[name]}" x="{i * bar_w:.1f}" '
                             f'y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}"/>')
                base += value
        if total:
            title = f"{fmt.seconds(edges[i])} – {fmt.seconds(edges[i + 1])}: {total} " \
                    f"task{'s' if total != 1 else ''}"
            parts.append(f'<rect x="{i * bar_w:.1f}" y="0" width="{bar_w:.1f}" '
                         f'height="{plot_h}" fill-opacity="0"><title>{escape(title)}</title>'
                         "</rect>")
    parts.append(f'<text x="0" y="{HIST_H - 4}" {TEXT_ATTRS}>'
                 f"{escape(fmt.seconds(edges[0]))}</text>"
                 f'<text x="{HIST_W}" y="{HIST_H - 4}" text-anchor="end" {TEXT_ATTRS}>'
                 f"{escape(fmt.seconds(edges[-1]))}</text>")
    return "".join(parts), HIST_W, HIST_H


def _failures(state: DashboardState, more: int) -> str:
    """Each listed failure a `<details>` opening on its traceback; the rest counted."""
    if not state.failures:
        return ""
    shown = len(state.failures)
    items = []
    for failure in state.failures.values():
        line = f"task {failure.task} · {failure.item} · {failure.error or failure.status}"
        items.append(f"<details><summary>{escape(line)}</summary>"
                     f"<pre>{escape(state.traceback(failure.task))}</pre></details>")
    rest = f"<p>{more} more: run.errors() has every failure</p>" if more else ""
    total = shown + more
    return (f"<p><b>{total} failed task{'s' if total != 1 else ''}</b> (click one for its "
            f"traceback)</p>{''.join(items)}{rest}")
