#!/usr/bin/env python3
"""Draws dashboards/tikban.json as a PNG from a Prometheus's data, without Grafana.

It reads the dashboard's panels (rows, grid positions, queries, units, legends, value mappings)
and asks Prometheus's query_range API for each target over a time range, substituting the
dashboard's variables the way Grafana does. It draws time series (stacked or not, right-axis
overrides), stat panels, state timelines and bar gauges in Grafana's dark colours. It is a
picture of the dashboard, not a Grafana replacement: the docs' screenshot (docs/dashboard.png)
is made with it from a real run (docs/operations.md, "Dashboard").

    python3 -m pip install 'matplotlib==3.10.3'
    python3 scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 --minutes 60 \\
        --out dashboard.png

Only the Python standard library and matplotlib (with its numpy and Pillow) are used.
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from PIL import Image
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(
        f"render-dashboard.py needs matplotlib ({e}): "
        "python3 -m pip install 'matplotlib==3.10.3'"
    )

# Grafana's dark theme and classic palette.
BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
DIM = "#8e8e9a"
GRID = "#24282d"
PALETTE = [
    "#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
    "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c",
]
NAMED = {
    "green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "orange": "#ff9830",
    "blue": "#5794f2", "purple": "#b877d9", "text": TEXT,
}

# Pixels: Grafana's grid has 24 columns and rows of 30 px plus an 8 px gap.
WIDTH = 1800
ROW_PX = 30
GAP = 8
HEADER = 70
DPI = 100


# Legend text: about this many pixels per character at fontsize 8 (DejaVu Sans), and the
# narrowest legend column that holds a name and its "last … max …".
CHAR_PX = 5.6
LEGEND_COL_MIN = 260


def fit(text, px):
    """`text` cut with an ellipsis to about `px` pixels of legend text."""
    n = max(int(px / CHAR_PX), 4)
    return text if len(text) <= n else text[: n - 1] + "…"


def color(c):
    return NAMED.get(c, c)


# === Prometheus ===


class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def _get(self, path, params):
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('error')}")
        return body["data"]

    def instant(self, expr, at):
        data = self._get("/api/v1/query", {"query": expr, "time": at})
        if data["resultType"] == "scalar":
            return [({}, [(float(data["result"][0]), float(data["result"][1]))])]
        return [(r["metric"], [(float(r["value"][0]), float(r["value"][1]))]) for r in data["result"]]

    def range(self, expr, start, end, step):
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )
        return [
            (r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]
        ]


def label_values(prom, query, variables, at):
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query)
    if not m:
        raise SystemExit(f"unsupported variable query: {query}")
    selector, label = m.group(1), m.group(2)
    rows = prom.instant(substitute(f"count by ({label}) ({selector})", variables), at)
    return sorted({r[0][label] for r in rows if label in r[0]})


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise SystemExit(f"unknown variable ${name} in {expr}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def legend(fmt, labels, fallback):
    if not fmt or fmt == "__auto":
        return fallback
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


# === Units ===


def si(v, base=1000.0, units=("", "K", "M", "G", "T")):
    a = abs(v)
    i = 0
    while a >= base and i < len(units) - 1:
        a /= base
        v /= base
        i += 1
    if abs(v) >= 100 or v == int(v):
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}".rstrip("0").rstrip(".")
    return s, units[i]


def fmt_value(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    unit = unit or "short"
    if unit == "bytes":
        n, u = si(v, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB"))
        return f"{n} {u}"
    if unit == "Bps":
        n, u = si(v, 1000.0, ("B/s", "kB/s", "MB/s", "GB/s"))
        return f"{n} {u}"
    if unit == "pps":
        n, u = si(v)
        return f"{n} {u}p/s".replace("  ", " ")
    if unit == "ops":
        n, u = si(v)
        return f"{n}{u} ops/s"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 1:
            return f"{si(v * 1000)[0]} ms"
        return f"{si(v)[0]} s"
    if unit.startswith("suffix:"):
        n, u = si(v)
        return f"{n}{u}{unit[len('suffix:'):].strip() and ' ' + unit[len('suffix:'):].strip()}"
    n, u = si(v)
    return f"{n}{(' ' + u) if u else ''}"


# === Drawing ===


def grid_box(gp, rows_px):
    """Figure-fraction box (left, bottom, width, height) of a gridPos."""
    col = (WIDTH - GAP) / 24.0
    x = GAP + gp["x"] * col
    w = gp["w"] * col - GAP
    y = HEADER + gp["y"] * (ROW_PX + GAP)
    h = gp["h"] * (ROW_PX + GAP) - GAP
    H = rows_px
    return (x / WIDTH, 1 - (y + h) / H, w / WIDTH, h / H), (x, y, w, h)


def panel_frame(fig, box_px, rows_px, title):
    x, y, w, h = box_px
    fig.patches.append(
        FancyBboxPatch(
            (x / WIDTH, 1 - (y + h) / rows_px),
            w / WIDTH,
            h / rows_px,
            boxstyle="round,pad=0,rounding_size=0.002",
            transform=fig.transFigure,
            facecolor=PANEL,
            edgecolor=BORDER,
            linewidth=1,
            # Figure-level patches are drawn after the axes of equal zorder: keep frames below.
            zorder=-10,
        )
    )
    fig.text(
        (x + 10) / WIDTH,
        1 - (y + 16) / rows_px,
        title,
        color=TEXT,
        fontsize=11,
        fontweight="bold",
        va="center",
        ha="left",
    )


def inner_axes(fig, box_px, rows_px, top=30, bottom=8, left=10, right=10):
    x, y, w, h = box_px
    return fig.add_axes(
        [
            (x + left) / WIDTH,
            1 - (y + h - bottom) / rows_px,
            (w - left - right) / WIDTH,
            (h - top - bottom) / rows_px,
        ]
    )


def style_axes(ax):
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.tick_params(colors=DIM, labelsize=8, length=0)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def mapping_for(defaults, value):
    for m in defaults.get("mappings", []):
        if m.get("type") == "value":
            key = str(int(value)) if value == int(value) else str(value)
            o = m.get("options", {}).get(key)
            if o:
                return o.get("text"), color(o.get("color", TEXT))
    return None, None


def threshold_color(defaults, value):
    steps = defaults.get("thresholds", {}).get("steps", [])
    c = TEXT
    for s in steps:
        if s.get("value") is None or value >= s["value"]:
            c = color(s.get("color", TEXT))
    return c


def last(points):
    for _, v in reversed(points):
        if not math.isnan(v):
            return v
    return None


def draw_timeseries(fig, panel, series, box_px, rows_px):
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    custom = defaults.get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    fill = custom.get("fillOpacity", 0) / 100.0
    right = {}
    for o in panel["fieldConfig"].get("overrides", []):
        if o["matcher"]["id"] == "byFrameRefID":
            props = {p["id"]: p["value"] for p in o["properties"]}
            if props.get("custom.axisPlacement") == "right":
                right[o["matcher"]["options"]] = props.get("unit", unit)
    n = len(series)
    x, y, w, h = box_px
    # The legend as Grafana's table (name, last, max): two columns when there are many series
    # and the panel is wide enough for them, at most 6 rows' worth of series.
    cols = 2 if n > 3 and (w - 20) / 2 >= LEGEND_COL_MIN else 1
    shown = min(n, 3 * cols if cols == 2 else 4)
    legend_px = 15 * math.ceil(shown / cols) + 6
    ax = inner_axes(fig, box_px, rows_px, top=30, bottom=legend_px + 22, left=58,
                    right=58 if right else 14)
    style_axes(ax)
    ax2 = None
    if right:
        ax2 = ax.twinx()
        style_axes(ax2)
        ax2.grid(False)
    if not series:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", transform=ax.transAxes)
    base = None
    for i, s in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        t = [datetime.fromtimestamp(p[0], tz=timezone.utc) for p in s["points"]]
        v = [p[1] for p in s["points"]]
        target = ax2 if s["ref"] in right else ax
        if stacked and target is ax:
            import numpy as np

            vals = np.nan_to_num(np.array(v, dtype=float))
            if base is None or len(base) != len(vals):
                base = np.zeros_like(vals)
            target.fill_between(t, base, base + vals, color=c, alpha=max(fill, 0.25), linewidth=0)
            target.plot(t, base + vals, color=c, linewidth=1.4)
            base = base + vals
        else:
            target.plot(t, v, color=c, linewidth=1.8)
            if fill > 0:
                target.fill_between(t, 0, v, color=c, alpha=fill, linewidth=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_value(v, unit)))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    if defaults.get("min") == 0:
        ax.set_ylim(bottom=0)
    if ax2:
        runit = next(iter(right.values()))
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_value(v, runit)))
        ax2.yaxis.set_major_locator(MaxNLocator(4))
        ax2.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    colw = (w - 20) / cols
    top = y + h - legend_px - 2
    for i, s in enumerate(series[:shown]):
        cx = x + 12 + (i % cols) * colw
        cy = top + 10 + (i // cols) * 15
        c = PALETTE[i % len(PALETTE)]
        vals = [p[1] for p in s["points"] if not math.isnan(p[1])]
        u = right.get(s["ref"], unit)
        fig.patches.append(
            Rectangle(((cx) / WIDTH, 1 - (cy + 4) / rows_px), 10 / WIDTH, 4 / rows_px,
                      transform=fig.transFigure, color=c)
        )
        values = f"last {fmt_value(last(s['points']), u)}   max {fmt_value(max(vals) if vals else None, u)}"
        fig.text((cx + 16) / WIDTH, 1 - cy / rows_px,
                 fit(s["name"], colw - 44 - CHAR_PX * len(values)), color=TEXT, fontsize=8,
                 va="center")
        fig.text(
            (cx + colw - 14) / WIDTH,
            1 - cy / rows_px,
            values,
            color=DIM,
            fontsize=8,
            va="center",
            ha="right",
        )
    if n > shown:
        # In the title bar, where it overlaps nothing.
        fig.text((x + w - 12) / WIDTH, 1 - (y + 16) / rows_px,
                 f"legend: {shown} of {n} series", color=DIM, fontsize=8, ha="right",
                 va="center")


def draw_stat(fig, panel, series, box_px, rows_px):
    defaults = panel["fieldConfig"]["defaults"]
    opts = panel["options"]
    unit = defaults.get("unit", "none")
    mode = opts.get("colorMode", "value")
    text_mode = opts.get("textMode", "auto")
    x, y, w, h = box_px
    n = max(len(series), 1)
    cell_w = (w - 16 - (n - 1) * 6) / n
    if not series:
        fig.text((x + w / 2) / WIDTH, 1 - (y + h / 2) / rows_px, "No data", color=DIM,
                 ha="center", va="center", fontsize=12)
    for i, s in enumerate(series):
        cx = x + 8 + i * (cell_w + 6)
        cy = y + 30
        ch = h - 38
        v = last(s["points"])
        text, mapped = mapping_for(defaults, v) if v is not None else (None, None)
        if defaults.get("color", {}).get("mode") == "palette-classic":
            c = PALETTE[i % len(PALETTE)]
        else:
            c = mapped or threshold_color(defaults, v if v is not None else 0)
        if mode == "background":
            fig.patches.append(
                Rectangle((cx / WIDTH, 1 - (cy + ch) / rows_px), cell_w / WIDTH, ch / rows_px,
                          transform=fig.transFigure, color=c, alpha=0.85, zorder=-5)
            )
        if opts.get("graphMode") == "area" and len(s["points"]) > 1:
            ax = fig.add_axes([cx / WIDTH, 1 - (cy + ch) / rows_px, cell_w / WIDTH,
                               ch * 0.45 / rows_px])
            ax.set_axis_off()
            t = [p[0] for p in s["points"]]
            vv = [p[1] for p in s["points"]]
            ax.fill_between(t, 0, vv, color=c, alpha=0.18, linewidth=0)
            ax.plot(t, vv, color=c, alpha=0.6, linewidth=1)
            ax.set_ylim(bottom=0)
            ax.set_xlim(t[0], t[-1])
        fg = "#ffffff" if mode == "background" else (c if mode == "value" else TEXT)
        value_text = text or fmt_value(v, unit)
        if text_mode == "name":
            fig.text((cx + cell_w / 2) / WIDTH, 1 - (cy + ch / 2) / rows_px, s["name"],
                     color=fg, fontsize=22, fontweight="bold", ha="center", va="center", zorder=3)
            continue
        fig.text((cx + cell_w / 2) / WIDTH, 1 - (cy + 12) / rows_px, s["name"], color=fg,
                 fontsize=9, ha="center", va="center", zorder=3)
        fig.text((cx + cell_w / 2) / WIDTH, 1 - (cy + ch / 2 + 8) / rows_px, value_text,
                 color=fg, fontsize=20 if n > 2 else 24, fontweight="bold", ha="center",
                 va="center", zorder=3)


def draw_state_timeline(fig, panel, series, box_px, rows_px, start, end):
    defaults = panel["fieldConfig"]["defaults"]
    ax = inner_axes(fig, box_px, rows_px, top=30, bottom=24, left=80, right=12)
    style_axes(ax)
    ax.grid(False)
    n = len(series)
    for i, s in enumerate(series):
        row = n - 1 - i
        pts = s["points"]
        for j, (t, v) in enumerate(pts):
            t2 = pts[j + 1][0] if j + 1 < len(pts) else end
            if math.isnan(v):
                continue
            _, c = mapping_for(defaults, v)
            c = c or threshold_color(defaults, v)
            ax.add_patch(Rectangle((t, row + 0.08), t2 - t, 0.84, color=c, alpha=0.85, lw=0))
        ax.text(-0.01, (row + 0.5) / max(n, 1), s["name"], transform=ax.transAxes, ha="right",
                va="center", color=TEXT, fontsize=9)
    ax.set_xlim(start, end)
    ax.set_ylim(0, max(n, 1))
    ax.set_yticks([])
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _: datetime.fromtimestamp(v, tz=timezone.utc).strftime("%H:%M:%S"))
    )
    ax.xaxis.set_major_locator(MaxNLocator(4))


def draw_bargauge(fig, panel, series, box_px, rows_px):
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    ax = inner_axes(fig, box_px, rows_px, top=34, bottom=10, left=12, right=12)
    ax.set_axis_off()
    n = len(series)
    if not n:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", transform=ax.transAxes)
        return
    vmax = max((last(s["points"]) or 0) for s in series) or 1
    for i, s in enumerate(series):
        v = last(s["points"]) or 0
        row = n - 1 - i
        c = PALETTE[i % len(PALETTE)]
        ax.add_patch(Rectangle((0.34, row + 0.18), 0.52, 0.64, color=BORDER, lw=0))
        ax.add_patch(Rectangle((0.34, row + 0.18), 0.52 * v / vmax, 0.64, color=c, lw=0,
                               alpha=0.9))
        ax.text(0.325, row + 0.5, s["name"], ha="right", va="center", color=TEXT, fontsize=9)
        ax.text(0.875, row + 0.5, fmt_value(v, unit), ha="left", va="center", color=c,
                fontsize=11, fontweight="bold")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL")
    ap.add_argument("--dashboard", default="dashboards/tikban.json")
    ap.add_argument("--instance", help="the $instance value (default: the first one)")
    ap.add_argument("--start", type=float, help="Unix time (default: --minutes before --end)")
    ap.add_argument("--end", type=float, help="Unix time (default: now)")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--step", type=float, help="seconds between points (default: range/240)")
    ap.add_argument("--rate-interval", default=None,
                    help="$__rate_interval (default: 4 steps, at least 1m)")
    ap.add_argument("--out", default="dashboard.png")
    args = ap.parse_args()

    dash = json.load(open(args.dashboard, encoding="utf-8"))
    prom = Prom(args.prometheus)
    end = args.end or time.time()
    start = args.start or end - args.minutes * 60
    step = args.step or max(1.0, round((end - start) / 240))
    rate = args.rate_interval or f"{int(max(4 * step, 60))}s"
    variables = {
        "__rate_interval": rate,
        "__interval": f"{int(step)}s",
        "__range": f"{int(end - start)}s",
    }
    shown_vars = []
    for v in dash.get("templating", {}).get("list", []):
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        if v["name"] == "instance" and args.instance:
            values = [args.instance]
        else:
            values = label_values(prom, q, variables, end)
        if not values:
            sys.exit(f"variable {v['name']}: no values ({q})")
        if v.get("multi") and len(values) > 1:
            variables[v["name"]] = "(" + "|".join(values) + ")"
            shown_vars.append(f"{v.get('label', v['name'])}: All")
        else:
            variables[v["name"]] = values[0]
            shown_vars.append(f"{v.get('label', v['name'])}: {values[0]}")

    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    rows_px = HEADER + bottom * (ROW_PX + GAP) + GAP
    fig = plt.figure(figsize=(WIDTH / DPI, rows_px / DPI), dpi=DPI, facecolor=BG)
    fig.text(GAP / WIDTH, 1 - 24 / rows_px, dash.get("title", "dashboard"), color=TEXT,
             fontsize=17, fontweight="bold", va="center")
    span = (
        f"{datetime.fromtimestamp(start, tz=timezone.utc):%Y-%m-%d %H:%M:%S} to "
        f"{datetime.fromtimestamp(end, tz=timezone.utc):%H:%M:%S} UTC"
    )
    fig.text(GAP / WIDTH, 1 - 52 / rows_px, "   ".join(shown_vars) + f"      {span}",
             color=DIM, fontsize=10, va="center")

    queries = 0
    for p in dash["panels"]:
        if p["type"] == "row":
            y = HEADER + p["gridPos"]["y"] * (ROW_PX + GAP)
            fig.text(GAP / WIDTH, 1 - (y + 15) / rows_px, p["title"], color=TEXT, fontsize=13,
                     fontweight="bold", va="center")
            continue
        _, box_px = grid_box(p["gridPos"], rows_px)
        panel_frame(fig, box_px, rows_px, p["title"])
        series = []
        for t in p.get("targets", []):
            if t.get("hide"):
                continue
            expr = substitute(t["expr"], variables)
            queries += 1
            if t.get("instant"):
                rows = prom.instant(expr, end)
            else:
                rows = prom.range(expr, start, end, step)
            for labels, points in rows:
                name = legend(t.get("legendFormat"), labels, expr)
                series.append({"name": name, "ref": t["refId"], "points": points})
        kind = p["type"]
        if kind == "timeseries":
            draw_timeseries(fig, p, series, box_px, rows_px)
        elif kind == "stat":
            draw_stat(fig, p, series, box_px, rows_px)
        elif kind == "state-timeline":
            draw_state_timeline(fig, p, series, box_px, rows_px, start, end)
        elif kind == "bargauge":
            draw_bargauge(fig, p, series, box_px, rows_px)
        else:
            sys.exit(f"panel type {kind} is not drawn by this script")

    fig.savefig(args.out, dpi=DPI, facecolor=BG)
    plt.close(fig)
    # A palette image: a fraction of the size, same look.
    img = Image.open(args.out).convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    img.save(args.out, optimize=True)
    print(f"{args.out}: {queries} queries, {span}")


if __name__ == "__main__":
    main()
