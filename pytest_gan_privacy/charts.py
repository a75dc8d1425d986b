"""Charts for the report, drawn as inline SVG by this project (no script, no network).

Every function returns SVG text that the template inserts with `|safe`, so every
piece of text that goes into it passes through `_text` (escaped) here. Inputs are
plain numbers from the audit's JSON, so the charts show the same numbers as the JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

MEMBER_COLOUR = "#d55e00"  # vermillion and blue: told apart with colour-blindness too
NON_MEMBER_COLOUR = "#0072b2"
ATTACK_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_text(title)}" class="chart">'
        f"<title>{_text(title)}</title>{''.join(body)}</svg>"
    )


class _Axes:
    """Maps data coordinates to a plot area with margins for the tick labels."""

    def __init__(self, width, height, x_range, y_range, left=44, right=12, top=12, bottom=36):
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top
        self.xr, self.yr = x_range, y_range

    def x(self, v: float) -> float:
        lo, hi = self.xr
        return self.x0 + (v - lo) / ((hi - lo) or 1) * (self.x1 - self.x0)

    def y(self, v: float) -> float:
        lo, hi = self.yr
        return self.y0 - (v - lo) / ((hi - lo) or 1) * (self.y0 - self.y1)

    def frame(self, x_ticks, y_ticks, x_label: str, y_label: str) -> list[str]:
        out = [
            f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" '
            f'height="{self.y0 - self.y1}" fill="none" stroke="#888"/>'
        ]
        for t in x_ticks:
            x = self.x(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" stroke="#888"/>'
                f'<text x="{x:.1f}" y="{self.y0 + 15}" text-anchor="middle" {FONT}>'
                f"{t:g}</text>"
            )
        for t in y_ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{self.x0 - 4}" y1="{y:.1f}" x2="{self.x0}" y2="{y:.1f}" stroke="#888"/>'
                f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>'
                f"{t:g}</text>"
            )
        mid_x, mid_y = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        out.append(
            f'<text x="{mid_x:.1f}" y="{self.y0 + 30}" text-anchor="middle" {FONT}>'
            f"{_text(x_label)}</text>"
            f'<text transform="translate(12 {mid_y:.1f}) rotate(-90)" text-anchor="middle" '
            f"{FONT}>{_text(y_label)}</text>"
        )
        return out


def _nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^e) inside [lo, hi], at most `most`."""
    span = (hi - lo) or 1.0
    step = next(
        m * 10.0**e for e in range(-6, 10) for m in (1, 2, 5) if span / (m * 10.0**e) < most
    )
    first = np.ceil(lo / step - 1e-9) * step
    return [float(round(t, 10)) + 0.0 for t in np.arange(first, hi + step * 1e-9, step)]  # no -0


def _dash(i: int) -> str:
    """Solid for the first round of colours, then dashed patterns: no two lines alike."""
    pattern = ("", "6 3", "2 2", "8 3 2 3")[(i // len(ATTACK_COLOURS)) % 4]
    return f' stroke-dasharray="{pattern}"' if pattern else ""


def _legend(x: float, y: float, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """One row per (label, colour, stroke-dasharray attribute or "")."""
    out = []
    for i, (label, colour, dash) in enumerate(entries):
        yy = y + 15 * i
        out.append(
            f'<line x1="{x}" y1="{yy}" x2="{x + 18}" y2="{yy}" stroke="{colour}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text x="{x + 23}" y="{yy + 4}" {FONT}>{_text(label)}</text>'
        )
    return out


def roc_curve_svg(
    labels: Sequence[int],
    attack_scores: dict[str, Sequence[float]],
    aucs: dict[str, float],
    operating_point: tuple[float, float],
) -> str:
    """ROC curve of every attack, the chance diagonal and the gate's cross-fitted
    operating point (FPR, TPR of its out-of-fold calls)."""
    from sklearn.metrics import roc_curve

    # the legend goes under the plot: with many attacks it would hide the curves
    legend_height = 15 * (len(attack_scores) + 2) + 10
    width, height = 400, 340 + legend_height
    ax = _Axes(width, height, (0, 1), (0, 1), bottom=36 + legend_height)
    ticks = (0, 0.25, 0.5, 0.75, 1)
    body = ax.frame(
        ticks, ticks, "false positive rate (non-members called used)", "true positive rate"
    )
    body.append(
        f'<line x1="{ax.x(0):.1f}" y1="{ax.y(0):.1f}" x2="{ax.x(1):.1f}" y2="{ax.y(1):.1f}" '
        'stroke="#aaa" stroke-dasharray="4 3"/>'
    )
    legend = []
    for i, (name, scores) in enumerate(attack_scores.items()):
        colour, dash = ATTACK_COLOURS[i % len(ATTACK_COLOURS)], _dash(i)
        fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores, float))
        points = " ".join(f"{ax.x(a):.1f},{ax.y(b):.1f}" for a, b in zip(fpr, tpr, strict=True))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        legend.append((f"{name} (AUC {aucs[name]:.3f})", colour, dash))
    legend.append(("chance (AUC 0.5)", "#aaa", ' stroke-dasharray="4 3"'))
    fx, ty = operating_point
    body.append(
        f'<circle cx="{ax.x(fx):.1f}" cy="{ax.y(ty):.1f}" r="4.5" fill="#000">'
        f"<title>cross-fitted calls: FPR {fx:.3f}, TPR {ty:.3f}</title></circle>"
    )
    lx, ly = ax.x0, ax.y0 + 52
    body += _legend(lx, ly, legend)
    dot_y = ly + 15 * len(legend)
    body.append(
        f'<circle cx="{lx + 9}" cy="{dot_y}" r="4" fill="#000"/>'
        f'<text x="{lx + 23}" y="{dot_y + 4}" {FONT}>the gate\'s cross-fitted calls</text>'
    )
    return _svg(width, height, "ROC curve", body)


def score_histogram_svg(
    member_scores: Sequence[float],
    non_member_scores: Sequence[float],
    thresholds: Sequence[float],
    bins: int = 30,
) -> str:
    """Histograms of the members' and non-members' scores, with the cross-fitted
    thresholds marked (one per fold: a band from the lowest to the highest, a line at
    their median)."""
    members = np.asarray(member_scores, float)
    non_members = np.asarray(non_member_scores, float)
    everything = np.concatenate([members, non_members, np.asarray(thresholds, float)])
    lo, hi = float(everything.min()), float(everything.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = {
        "members (used)": (np.histogram(members, edges)[0], MEMBER_COLOUR),
        "non-members (not used)": (np.histogram(non_members, edges)[0], NON_MEMBER_COLOUR),
    }
    top = max(1, *(int(c.max()) for c, _ in counts.values()))
    width, height = 560, 300
    # the legend and the threshold's label sit above the plot, where they hide no bar
    ax = _Axes(width, height, (lo, hi), (0, top * 1.15), right=24, top=38)
    y_ticks = [t for t in _nice_ticks(0, top, 5) if t == int(t)]
    body = ax.frame(
        _nice_ticks(lo, hi), y_ticks, "score (higher: more likely a member)", "candidates"
    )
    for c, colour in counts.values():
        steps = [f"{ax.x(edges[0]):.1f},{ax.y(0):.1f}"]
        for i, n in enumerate(c):
            steps += [
                f"{ax.x(edges[i]):.1f},{ax.y(n):.1f}",
                f"{ax.x(edges[i + 1]):.1f},{ax.y(n):.1f}",
            ]
        steps.append(f"{ax.x(edges[-1]):.1f},{ax.y(0):.1f}")
        body.append(
            f'<polygon points="{" ".join(steps)}" fill="{colour}" fill-opacity="0.25" '
            f'stroke="{colour}" stroke-width="1.5"/>'
        )
    if len(thresholds):
        t_lo, t_mid, t_hi = (float(v) for v in np.quantile(thresholds, [0, 0.5, 1]))
        body.append(
            f'<rect x="{ax.x(t_lo):.1f}" y="{ax.y1}" width="{max(ax.x(t_hi) - ax.x(t_lo), 0):.1f}" '
            f'height="{ax.y0 - ax.y1}" fill="#000" fill-opacity="0.08"/>'
            f'<line x1="{ax.x(t_mid):.1f}" y1="{ax.y1}" x2="{ax.x(t_mid):.1f}" y2="{ax.y0}" '
            'stroke="#000" stroke-width="1.5" stroke-dasharray="5 3"/>'
            # the label above the plot, on the side of the line with more room
            f'<text x="{ax.x(t_mid) + (4 if t_mid < (lo + hi) / 2 else -4):.1f}" '
            f'y="{ax.y1 - 5}" text-anchor="{"start" if t_mid < (lo + hi) / 2 else "end"}" '
            f"{FONT}>threshold {t_mid:.3f}"
            f"{'' if len(thresholds) == 1 else f' ({t_lo:.3f}-{t_hi:.3f} over the folds)'}</text>"
        )
    for i, (label, (_, colour)) in enumerate(counts.items()):
        body += _legend(ax.x0 + 190 * i, 10, [(label, colour, "")])
    return _svg(width, height, "Score distributions of members and non-members", body)


def attack_f1_svg(
    attacks: dict[str, dict], max_f1: float, gating_attack: str, chance_f1: float
) -> str:
    """One bar per attack: its F1 with the 95 % interval, against the limit and chance."""
    names = list(attacks)
    row, left = 26, 170
    width, height = 560, 64 + row * len(names)
    ax = _Axes(width, height, (0, 1), (0, 1), left=left, top=20, bottom=38)
    body = ax.frame((0, 0.2, 0.4, 0.6, 0.8, 1), (), "leakage F1 (95 % interval)", "")
    for i, name in enumerate(names):
        a = attacks[name]
        y = ax.y1 + 4 + row * i
        colour = "#444" if name == gating_attack else "#9a9a9a"
        label = f"{name} (gate)" if name == gating_attack else name
        body.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" {FONT}>{_text(label)}</text>'
            f'<rect x="{ax.x(0):.1f}" y="{y + 3}" width="{ax.x(a["f1"]) - ax.x(0):.1f}" '
            f'height="14" fill="{colour}"><title>{_text(name)}: F1 {a["f1"]:.3f}</title></rect>'
        )
        if a["f1_ci"] is not None:  # no bootstrap: no interval drawn
            lo_ci, hi_ci = a["f1_ci"]
            body.append(
                f'<line x1="{ax.x(lo_ci):.1f}" y1="{y + 10}" x2="{ax.x(hi_ci):.1f}" '
                f'y2="{y + 10}" stroke="#000" stroke-width="1.5"/>'
            )
    # the limit's label right of its line, chance's left of its own: they rarely collide
    for value, colour, label, dx, anchor in (
        (max_f1, "#b00", "limit", 3, "start"),
        (chance_f1, "#666", "chance", -3, "end"),
    ):
        x = ax.x(value)
        body.append(
            f'<line x1="{x:.1f}" y1="{ax.y1}" x2="{x:.1f}" y2="{ax.y0}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<text x="{x + dx:.1f}" y="{ax.y1 - 6}" text-anchor="{anchor}" fill="{colour}" '
            f"{FONT}>{label} {value:.3f}</text>"
        )
    return _svg(width, height, "F1 of each attack against the limit", body)
