#!/usr/bin/env python3
"""bench_plot.py: turn ivip benchmark JSON lines into SVG charts.

Every `cargo bench --bench NAME` target of ivip (table, replicator, ruas, qsd,
uas, history) prints one JSON object per line:

    {"figure": "fanout_copies_per_s", "value": 226689.4, "unit": "copies/s",
     "fanout": 20, "payload_bytes": 502, "cpus": 2}

This script reads such lines (other lines are ignored), groups the figures by
unit and writes one hand-written SVG chart per group:

  * a capacity curve when the figures carry a scale parameter (the first of
    micronets, stored_changes, fanout, dests, clients, changes they have):
    x = that parameter (log scale when it spans 10x or more), y = value, one
    line per figure and setting (family, api, huge_pages, batch,
    batch_window_us, ...), at most 8 lines per chart (more make more charts);
  * a horizontal bar chart otherwise, the value printed at each bar's end.

Usage:

    cargo bench --bench table | python3 contrib/bench_plot.py --out plots
    python3 contrib/bench_plot.py --out plots run1.jsonl run2.jsonl

It prints the path of every SVG written and exits 0. It exits 2, with a
one-line message, when an input cannot be read or holds no figure line, and 1
when the output directory cannot be written. Lines that start with `{` but are
not valid JSON are skipped with a warning naming the line.

Python 3 standard library only: it runs on a fresh machine, and the crate does
not grow a plotting dependency.
"""

import argparse
import json
import math
import os
import re
import sys

# Parameters that make a capacity curve's x axis, in order of preference.
SCALE_KEYS = ("micronets", "stored_changes", "fanout", "dests", "clients", "changes")
# Numeric parameters that are settings of a run (not results): when one of
# them differs between lines of the same figure, it tells the lines apart.
SETTING_KEYS = {
    "batch",
    "batch_window_us",
    "publish_every",
    "payload_bytes",
    "workers",
    "threads",
    "cpus",
    "window",
    "rate_per_s",
    "target",
    "target_us",
}
MAX_SERIES = 8
WIDTH, HEIGHT = 760, 420
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
# Okabe-Ito, colour-blind safe (its yellow swapped for a grey that shows on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F", "#000000"]
CHAR_W = 0.6  # width of a character in em, generous for DejaVu Sans


class InputError(Exception):
    """An input that cannot be used at all (exit status 2)."""


def warn(msg):
    print(f"bench_plot: warning: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def as_number(v):
    """A parameter's numeric value (numbers, or strings that are numbers), else None."""
    if is_number(v):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def read_records(sources):
    """Figure records from (name, text) pairs, in input order."""
    records = []
    for name, text in sources:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            where = f"{name}:{lineno}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                warn(f"{where}: malformed JSON on line {lineno}, skipped ({e.msg})")
                continue
            if not isinstance(obj, dict) or "figure" not in obj:
                warn(f'{where}: JSON object without a "figure" skipped')
                continue
            value = obj.get("value")
            if not is_number(value):
                warn(f'{where}: figure {obj["figure"]!r} has no finite numeric "value", skipped')
                continue
            params = {
                k: v
                for k, v in obj.items()
                if k not in ("figure", "value", "unit") and isinstance(v, (str, int, float, bool))
            }
            records.append(
                {
                    "figure": str(obj["figure"]),
                    "value": float(value),
                    "unit": str(obj.get("unit", "")),
                    "params": params,
                    "where": where,
                }
            )
    return records


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def si(v, sig=3):
    """1234567 -> '1.23M', 340000 -> '340k', 28.273 -> '28.3', 0.00421 -> '0.00421'."""
    if v == 0:
        return "0"
    r = float(f"{v:.{sig}g}")
    a = abs(r)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{r / div:.{sig}g}"
            return (s if "e" not in s else f"{r / div:.0f}") + suffix
    s = f"{r:.{sig}g}"
    if "e" in s and a >= 1:
        s = f"{r:.0f}"
    return s


def fmt_param(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def esc(s):
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def text_w(s, size):
    return len(s) * size * CHAR_W


def fit(s, width, size):
    """s cut with an ellipsis to fit `width` pixels at font `size`."""
    n = int(width / (size * CHAR_W))
    return s if len(s) <= n else s[: max(1, n - 1)] + "\u2026"


def wrap(s, width, size, max_lines):
    """s in at most `max_lines` lines of `width` pixels: broken at spaces, else
    after an underscore, else anywhere; the last line cut with an ellipsis."""
    n = max(4, int(width / (size * CHAR_W)))
    lines, rest = [], s.strip()
    while rest and len(lines) < max_lines:
        if len(rest) <= n or len(lines) == max_lines - 1:
            lines.append(fit(rest, width, size))
            break
        cut = rest.rfind(" ", 0, n + 1)
        if cut <= 0:
            cut = rest.rfind("_", 0, n) + 1
        if cut <= 0:
            cut = n
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return lines


def slug(unit):
    s = unit.replace("/", "_per_").replace("%", "pct")
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    return s or "unitless"


def verdict(unit):
    if "/s" in unit:
        return "higher is better"
    if unit in ("ns", "us", "\u00b5s", "ms", "s", "bytes", "B"):
        return "lower is better"
    return ""


def label_of(figure, params, keys):
    extra = " ".join(f"{k}={fmt_param(params[k])}" for k in keys if k in params)
    return figure, extra


# ---------------------------------------------------------------------------
# Scales
# ---------------------------------------------------------------------------


def nice_step(span, target=5):
    if span <= 0:
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    f = raw / mag
    return mag * (1 if f < 1.5 else 2 if f < 3 else 5 if f < 7 else 10)


def linear_ticks(lo, hi, target=5):
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks, step


def tick_label(t, step):
    if t == 0:
        return "0"
    sig = max(1, min(6, math.floor(math.log10(abs(t))) - math.floor(math.log10(step)) + 1))
    return si(t, sig)


def log_ticks(lo, hi):
    """Powers of ten in [lo, hi]; 2x and 5x added when fewer than three."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [10.0**k for k in range(a, b + 1) if lo * (1 - 1e-9) <= 10.0**k <= hi * (1 + 1e-9)]
    if len(ticks) < 3:
        ticks = sorted(
            m * 10.0**k
            for k in range(a, b + 1)
            for m in (1, 2, 5)
            if lo * (1 - 1e-9) <= m * 10.0**k <= hi * (1 + 1e-9)
        )
    return ticks


class Axis:
    """Maps data values in [lo, hi] onto pixels [p0, p1]."""

    def __init__(self, lo, hi, p0, p1, log):
        self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log

    def __call__(self, v):
        if self.log:
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)

    def ticks(self):
        if self.log:
            return [(t, si(t)) for t in log_ticks(self.lo, self.hi)]
        ticks, step = linear_ticks(self.lo, self.hi)
        return [(t, tick_label(t, step)) for t in ticks]


def x_axis(xs, p0, p1):
    lo, hi = min(xs), max(xs)
    # 9.9, not 10: "10M" changes come out as 10000013 and "100M" as 100000001.
    if lo > 0 and hi / lo >= 9.9:
        pad = max(0.1, 0.06 * math.log10(hi / lo))
        return Axis(lo / 10**pad, hi * 10**pad, p0, p1, True)
    if hi == lo:
        lo, hi = (0.0, 2 * hi) if hi > 0 else (lo - 1, hi + 1)
    elif lo >= 0 and lo < hi - lo:
        lo, hi = 0.0, hi + 0.06 * hi
    else:
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    return Axis(lo, hi, p0, p1, False)


def value_axis(vs, p0, p1, allow_log):
    lo, hi = min(vs), max(vs)
    if allow_log and lo > 0 and hi / lo >= 100:
        return Axis(10.0 ** math.floor(math.log10(lo)), 10.0 ** math.ceil(math.log10(hi)), p0, p1, True)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        hi = 1.0
    step = nice_step((hi - lo) * 1.05)
    lo = math.floor(lo / step - 1e-9) * step if lo < 0 else 0.0
    hi = math.ceil(hi * 1.02 / step - 1e-9) * step if hi > 0 else 0.0
    return Axis(lo, hi, p0, p1, False)


# ---------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------


def scale_key(recs):
    """The x parameter of one figure's records: of the scale keys every record
    has, the one spanning the widest ratio (ties: the earlier in SCALE_KEYS).
    A history figure carries both stored_changes (its scale) and micronets
    (the table size that came out); the span tells them apart."""
    best, best_span = None, 0.0
    for k in SCALE_KEYS:
        vals = [as_number(r["params"].get(k)) for r in recs]
        if any(v is None or v <= 0 for v in vals):
            continue
        span = max(vals) / min(vals)
        if best is None or span > best_span * (1 + 1e-9):
            best, best_span = k, span
    return best


def distinguishing_keys(recs, exclude):
    """Parameters that tell one figure's records apart: strings and booleans
    that differ between them, and numeric settings (SETTING_KEYS) that do."""
    keys = []
    for r in recs:
        for k in r["params"]:
            if k in exclude or k in keys:
                continue
            vals = {fmt_param(x["params"].get(k)) for x in recs}
            if len(vals) < 2:
                continue
            v = r["params"][k]
            if isinstance(v, (str, bool)) and as_number(v) is None or k in SETTING_KEYS:
                keys.append(k)
    return keys


def by_figure(records):
    out = {}
    for r in records:
        out.setdefault(r["figure"], []).append(r)
    return out


def constants(recs, exclude):
    """Parameters with one short value on every record: '`cpus=2`, ...'."""
    if not recs:
        return []
    out = []
    for k, v in recs[0]["params"].items():
        if k in exclude:
            continue
        s = fmt_param(v)
        if len(s) > 24:
            continue
        if all(k in r["params"] and fmt_param(r["params"][k]) == s for r in recs):
            out.append(f"{k}={s}")
    return out


def build_curves(recs):
    """Series of points, packed into charts of at most MAX_SERIES series."""
    charts, cur = [], []
    for fig, frecs in by_figure(recs).items():
        key = scale_key(frecs)
        dkeys = distinguishing_keys(frecs, set(SCALE_KEYS) | {key})
        series = {}
        for r in frecs:
            sid = tuple(fmt_param(r["params"].get(k)) for k in dkeys)
            s = series.setdefault(
                sid,
                {"figure": fig, "label": label_of(fig, r["params"], dkeys), "key": key, "points": {}},
            )
            x = as_number(r["params"][key])
            if x in s["points"]:
                warn(f"{r['where']}: {fig} {' '.join(s['label'][1:])} at {key}={fmt_param(x)} "
                     "repeats an earlier line; the later value is drawn")
            s["points"][x] = r
        ss = list(series.values())
        if cur and len(cur) + len(ss) > MAX_SERIES:
            charts.append(cur)
            cur = []
        # One figure with more settings than a chart holds fills several.
        while len(ss) > MAX_SERIES:
            charts.append(ss[:MAX_SERIES])
            ss = ss[MAX_SERIES:]
        cur.extend(ss)
    if cur:
        charts.append(cur)
    return charts


def build_bars(recs):
    """(figure, settings, record) for a bar chart, grouped by figure."""
    bars = []
    for fig, frecs in by_figure(recs).items():
        dkeys = distinguishing_keys(frecs, set())
        labels = [label_of(fig, r["params"], dkeys)[1] for r in frecs]
        if len(set(labels)) < len(labels):
            # Repeated lines with no setting between them: name them by whatever
            # parameter does differ, and number exact repeats.
            more = [
                k
                for k in frecs[0]["params"]
                if len({fmt_param(r["params"].get(k)) for r in frecs}) > 1
                and len(fmt_param(frecs[0]["params"][k])) <= 24
            ]
            keys = dkeys + [k for k in more if k not in dkeys]
            labels = [label_of(fig, r["params"], keys)[1] for r in frecs]
            seen = {}
            for i, lab in enumerate(labels):
                seen[lab] = seen.get(lab, 0) + 1
                if seen[lab] > 1:
                    labels[i] = f"{lab} (run {seen[lab]})".strip()
        bars.extend((fig, lab, r) for lab, r in zip(labels, frecs))
    return bars


# ---------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------


def svg_open(w, h, title):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="{FONT}" font-size="12" fill="#222">',
        f"<title>{esc(title)}</title>",
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
    ]


def text(x, y, s, size=12, anchor="start", extra=""):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{esc(s)}</text>'
    )


def title_of(unit, figures, width):
    """'fig_a, fig_b, fig_c +2 more (unit)' fitted to `width` pixels at 13px."""
    tail = f" ({unit})" if unit else ""
    for n in range(len(figures), 0, -1):
        more = f" +{len(figures) - n} more" if n < len(figures) else ""
        t = ", ".join(figures[:n]) + more + tail
        if text_w(t, 13) <= width:
            return t
    return fit(figures[0] + tail, width, 13)


def header(out, w, unit, figures, notes):
    out.append(text(12, 22, title_of(unit, figures, w - 24), 13, extra=' font-weight="bold"'))
    sub = " \u00b7 ".join(n for n in notes if n)
    if sub:
        out.append(text(12, 40, fit(sub, w - 24, 11), 11, extra=' fill="#555"'))


def footnote(out, w, h, consts):
    if consts:
        out.append(text(12, h - 8, fit("every point: " + ", ".join(consts), w - 24, 11), 11,
                        extra=' fill="#666"'))


def curve_svg(unit, series):
    W, H = WIDTH, HEIGHT
    left, right, top, bottom = 72, 540, 58, H - 72
    figures = list(dict.fromkeys(s["figure"] for s in series))
    keys = list(dict.fromkeys(s["key"] for s in series))
    pts = [(x, r) for s in series for x, r in s["points"].items()]
    xa = x_axis([x for x, _ in pts], left, right)
    ya = value_axis([r["value"] for _, r in pts], bottom, top, allow_log=True)
    recs = [r for _, r in pts]
    used = set(SCALE_KEYS) | {k for s in series for k in distinguishing_keys(
        [r for r in recs if r["figure"] == s["figure"]], set(SCALE_KEYS) | {s["key"]})}
    xname = " / ".join(keys)
    notes = [
        verdict(unit),
        f"x: {xname}" + (", log scale" if xa.log else ""),
        "y: log scale" if ya.log else "",
        f"{len(series)} series, {len(pts)} point{'s' if len(pts) != 1 else ''}",
    ]
    out = svg_open(W, H, title_of(unit, figures, 10**6))
    header(out, W, unit, figures, notes)

    # Grid and ticks.
    for t, lab in ya.ticks():
        y = ya(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(text(left - 6, y + 4, lab, 11, "end"))
    for t, lab in xa.ticks():
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#f0f0f0"/>')
        out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#444"/>')
        out.append(text(x, bottom + 17, lab, 11, "middle"))
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>')
    out.append(text((left + right) / 2, bottom + 36, xname + (" (log scale)" if xa.log else ""), 12, "middle"))
    cy = (top + bottom) / 2
    out.append(text(18, cy, unit or "value", 12, "middle", f' transform="rotate(-90 18 {cy:.1f})"'))

    # Series, then the legend to the right of the plot.
    labels = []
    for s in series:
        name, extra = s["label"]
        if len(keys) > 1:
            extra = f"{extra} (x: {s['key']})".strip()
        labels.append((name, extra, f"{name} {extra}".strip()))
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        ordered = sorted(s["points"].items())
        full = labels[i][2]
        out.append(f"<g><title>{esc(full)}</title>")
        if len(ordered) > 1:
            path = " ".join(f"{xa(x):.1f},{ya(r['value']):.1f}" for x, r in ordered)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        radius = 3.5 if len(ordered) > 1 else 5
        for x, r in ordered:
            tip = f"{full}: {s['key']}={fmt_param(x)} \u2192 {si(r['value'])} {unit} ({r['value']:g})"
            out.append(
                f'<circle cx="{xa(x):.1f}" cy="{ya(r["value"]):.1f}" r="{radius}" fill="{color}" '
                f'stroke="#fff" stroke-width="1"><title>{esc(tip)}</title></circle>'
            )
        out.append("</g>")

    # The legend, right of the plot: each entry the figure name, then its
    # settings in grey, with as many lines as the space allows.
    lx, lw = right + 18, W - right - 26
    room = bottom + 24 - top
    for name_max, extra_max in ((2, 2), (1, 2), (1, 1)):
        entries = [
            (wrap(n, lw - 22, 11, name_max), wrap(e, lw - 22, 11, extra_max) if e else [])
            for n, e, _ in labels
        ]
        if sum(13 * (len(a) + len(b)) + 5 for a, b in entries) <= room:
            break
    ly = top
    for i, (name_lines, extra_lines) in enumerate(entries):
        color = PALETTE[i % len(PALETTE)]
        need = 13 * (len(name_lines) + len(extra_lines)) + 5
        if ly + need > top + room:
            out.append(text(lx, ly + 10, f"+{len(series) - i} more series", 11, extra=' fill="#555"'))
            break
        out.append(f"<g><title>{esc(labels[i][2])}</title>")
        out.append(f'<line x1="{lx}" y1="{ly + 6}" x2="{lx + 16}" y2="{ly + 6}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<rect x="{lx + 5}" y="{ly + 3}" width="6" height="6" fill="{color}"/>')
        for j, line in enumerate(name_lines + extra_lines):
            grey = "" if j < len(name_lines) else ' fill="#555"'
            out.append(text(lx + 22, ly + 10 + 13 * j, line, 11, extra=grey))
        out.append("</g>")
        ly += need
    footnote(out, W, H, constants(recs, used))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_svg(unit, bars):
    W = WIDTH
    top, bottom_margin = 52, 58
    slot = max(16.0, (HEIGHT - top - bottom_margin) / len(bars))
    H = max(HEIGHT, int(top + bottom_margin + slot * len(bars)))
    full_labels = [f"{fig} {lab}".strip() for fig, lab, _ in bars]
    label_w = min(W * 0.45, max(text_w(lab, 11) for lab in full_labels) + 4)
    left, right = 12 + label_w + 8, W - 84
    bottom = H - bottom_margin
    figures = list(dict.fromkeys(fig for fig, _, _ in bars))
    xa = value_axis([r["value"] for _, _, r in bars], left, right, allow_log=False)
    recs = [r for _, _, r in bars]
    used = set()
    for fig in figures:
        used.update(distinguishing_keys([r for r in recs if r["figure"] == fig], set()))
    out = svg_open(W, H, title_of(unit, figures, 10**6))
    header(out, W, unit, figures, [verdict(unit), f"{len(bars)} bars"])
    for t, lab in xa.ticks():
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e8e8e8"/>')
        out.append(text(x, bottom + 16, lab, 11, "middle"))
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>')
    out.append(text((left + right) / 2, bottom + 34, unit or "value", 12, "middle"))
    zero = xa(0.0)
    thick = min(26.0, slot * 0.6)
    colors = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(figures)}
    for i, ((fig, settings, r), lab) in enumerate(zip(bars, full_labels)):
        cy = top + slot * (i + 0.5)
        x = xa(r["value"])
        x0, x1 = min(zero, x), max(zero, x)
        full = f"{lab}: {si(r['value'])} {unit} ({r['value']:g})"
        if text_w(lab, 11) > label_w and settings:
            # Too long: shorten the figure name, keep the settings that tell bars apart.
            room = max(label_w - text_w(" " + settings, 11), label_w * 0.3)
            lab = fit(fit(fig, room, 11) + " " + settings, label_w, 11)
        out.append(f"<g><title>{esc(full)}</title>")
        out.append(text(left - 8, cy + 4, fit(lab, label_w, 11), 11, "end"))
        out.append(
            f'<rect x="{x0:.1f}" y="{cy - thick / 2:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{thick:.1f}" fill="{colors[r["figure"]]}"/>'
        )
        shown = f"{si(r['value'])} {unit}".strip()
        if r["value"] < 0:
            out.append(text(x0 - 5, cy + 4, shown, 11, "end"))
        else:
            out.append(text(x1 + 5, cy + 4, shown, 11))
        out.append("</g>")
    out.append(f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{bottom}" stroke="#444"/>')
    footnote(out, W, H, constants(recs, used))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def charts(records):
    """(file stem, svg text) for every chart, units in order of appearance."""
    units = {}
    for r in records:
        units.setdefault(r["unit"], []).append(r)
    out, taken = [], set()

    def stem(base):
        s, n = base, 2
        while s in taken:
            s, n = f"{base}_{n}", n + 1
        taken.add(s)
        return s

    for unit, recs in units.items():
        figs = by_figure(recs)
        curve = [r for f, fr in figs.items() if scale_key(fr) for r in fr]
        flat = [r for f, fr in figs.items() if not scale_key(fr) for r in fr]
        base = slug(unit)
        for series in build_curves(curve) if curve else []:
            out.append((stem(base), curve_svg(unit, series)))
        if flat:
            out.append((stem(f"{base}_bars" if curve else base), bar_svg(unit, build_bars(flat))))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Turn ivip benchmark JSON lines into SVG charts (one per unit).",
        epilog="example: cargo bench --bench table | python3 contrib/bench_plot.py --out plots",
    )
    ap.add_argument("--out", required=True, metavar="DIR", help="directory for the SVG files (created)")
    ap.add_argument("inputs", nargs="*", metavar="FILE", help="files of JSON lines (default, or '-': stdin)")
    args = ap.parse_args(argv)

    sources = []
    try:
        for path in args.inputs or ["-"]:
            if path == "-":
                sources.append(("<stdin>", sys.stdin.buffer.read().decode("utf-8", "replace")))
            else:
                try:
                    with open(path, "rb") as f:
                        sources.append((path, f.read().decode("utf-8", "replace")))
                except OSError as e:
                    raise InputError(
                        f"cannot read input {path!r}: {e.strerror or e}; "
                        "pass a readable file of benchmark JSON lines, or pipe them on stdin"
                    )
        records = read_records(sources)
        if not records:
            names = ", ".join(n for n, _ in sources)
            raise InputError(
                f'no JSON figure lines ({{"figure": ..., "value": N, ...}}) found in {names}; '
                "feed it the output of `cargo bench --bench NAME`"
            )
    except InputError as e:
        print(f"bench_plot: error: {e}", file=sys.stderr)
        return 2

    try:
        os.makedirs(args.out, exist_ok=True)
        for name, svg in charts(records):
            path = os.path.join(args.out, name + ".svg")
            with open(path, "w", encoding="utf-8") as f:
                f.write(svg)
            print(path)
    except OSError as e:
        where = e.filename or args.out
        print(f"bench_plot: error: cannot write {where!r}: {e.strerror or e}; "
              "choose a writable --out directory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
