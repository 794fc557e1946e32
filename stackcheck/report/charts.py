"""The report's charts: matplotlib figures serialised as inline SVG (text kept as text, no scripts).

Each function takes the plain dicts of results.json and returns one ``<svg>`` element, so the
HTML stays self-contained and opens offline.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported

from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

FAULT_COLOUR = "#f4b183"
ERROR_COLOUR = "#c0392b"
OK_COLOUR = "#2e8b57"
_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: small, searchable, readable at any zoom
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
# Matplotlib derives clip-path ids from a salt: a distinct salt per chart keeps ids unique when
# several SVGs share one HTML document, and restarting the count per page keeps pages reproducible.
_salt = itertools.count()
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def new_page() -> None:
    global _salt
    _salt = itertools.count()


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"stackcheck-{next(_salt)}"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: invalid inside HTML


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def latency_chart(run: dict[str, Any], objectives: Sequence[tuple[str, float]]) -> str:
    """p50/p95/p99 per second, throughput on a second axis, and each latency objective as a line."""
    rows = run.get("intervals") or []
    seconds = [interval_second(r) for r in rows]
    with matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(12.5, 3.8))
        for key, colour in (("p50_ms", "#4c72b0"), ("p95_ms", "#dd8452"), ("p99_ms", "#c44e52")):
            values = [r.get(key) if _finite(r.get(key)) else math.nan for r in rows]
            ax.plot(seconds, values, color=colour, linewidth=1.6, label=key.replace("_ms", ""))
        for label, target in objectives:
            ax.axhline(target, color="black", linestyle="--", linewidth=1.2, label=f"objective {label} {target:g} ms")
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        rps = ax.twinx()
        rps.plot(seconds, [interval_requests(r) for r in rows], color="#8c8c8c", linewidth=1, label="throughput")
        rps.set_ylabel("requests / s")
        rps.set_ylim(0, max([interval_requests(r) for r in rows], default=1) * 1.25 or 1)  # headroom: off the frame
        rps.grid(False)
        lines = ax.get_legend_handles_labels()
        more = rps.get_legend_handles_labels()
        _legend_below(ax, lines[0] + more[0], lines[1] + more[1])
        ax.set_title(f"Latency over time: {profile_name(run)} ({run.get('mode', '?')} loop)")
        if not rows:
            ax.text(0.5, 0.5, "no per-second intervals recorded", transform=ax.transAxes, ha="center")
        return _svg(fig)


def _legend_below(ax: Axes, handles: list[Any], labels: list[str]) -> None:
    """Under the plot, where it hides no data."""
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=len(labels), fontsize=9)


def interval_second(row: dict[str, Any]) -> float:
    # stackcheck.load names the column "second" (Interval); accept "t" as well.
    return float(row.get("second", row.get("t", 0)))


def interval_requests(row: dict[str, Any]) -> float:
    # Interval.requests in the dataclass, "rps" in intervals.csv: the same per-1 s count.
    return float(row.get("requests", row.get("rps", 0)))


def profile_name(run: dict[str, Any]) -> str:
    profile = run.get("profile")
    return str(profile.get("name", "?")) if isinstance(profile, dict) else str(profile or "?")


def chaos_timeline(experiment: dict[str, Any]) -> str:
    """Fault windows shaded, first error and recovery marked, requests and errors per second."""
    events = experiment.get("events") or []
    origin = events[0]["mono"] if events else 0.0
    with matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(12.5, 3.4))
        traffic = experiment.get("traffic") or []
        if traffic:
            x = [t["mono"] - origin for t in traffic]
            requests = [t["requests"] for t in traffic]
            ax.bar(x, [t["errors"] for t in traffic], width=1.0, align="edge", color=ERROR_COLOUR, label="errors / s")
            ax.step([*x, x[-1] + 1], [*requests, requests[-1]], where="post", color="#4c72b0", label="requests / s")
            ax.set_ylabel("requests / s")
            ax.set_ylim(0, max(requests) * 1.2 or 1)
        else:
            ax.text(0.5, 0.5, "no traffic recorded for this scenario", transform=ax.transAxes, ha="center")
            ax.set_yticks([])
        for i, (name, start, end) in enumerate(fault_windows(events)):
            stop = end if end is not None else max(e["mono"] for e in events)
            label = "fault" if i == 0 else None
            ax.axvspan(start - origin, stop - origin, color=FAULT_COLOUR, alpha=0.45, zorder=0, label=label)
            ax.text(start - origin, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        marks = {"first_error": ("first error", ERROR_COLOUR), "recovered": ("recovered", OK_COLOUR)}
        for event in events:
            if event["kind"] in marks:
                label, colour = marks.pop(event["kind"])
                ax.axvline(event["mono"] - origin, color=colour, linestyle="--", linewidth=1.6, label=label)
        steps = [e["mono"] - origin for e in events if e["kind"] in ("steady_state", "action", "verify", "rollback")]
        ax.plot(steps, [0] * len(steps), "kv", markersize=6, label="steps (see journal)", clip_on=False)
        ax.set_xlabel("seconds since the experiment started")
        _legend_below(ax, *ax.get_legend_handles_labels())
        ax.set_title(f"Timeline: {experiment.get('scenario', '?')}")
        return _svg(fig)


def fault_windows(events: Sequence[dict[str, Any]]) -> list[tuple[str, float, float | None]]:
    """(fault name, start, end or None) in order of start, pairing each fault_end with its start by name."""
    windows: list[tuple[str, float, float | None]] = []
    for event in events:
        if event["kind"] == "fault_start":
            windows.append((event["name"], event["mono"], None))
        elif event["kind"] == "fault_end":
            for i, (name, start, end) in enumerate(windows):
                if name == event["name"] and end is None:
                    windows[i] = (name, start, event["mono"])
                    break
    return windows


def recovery_bars(experiment: dict[str, Any]) -> str | None:
    """RTO and RPO as bars against their objectives; None when neither was measured."""
    objective = experiment.get("objective") or {}
    bars = []
    for label, measured, target in (
        ("RTO", (experiment.get("rto") or {}).get("rto_s"), objective.get("rto_s")),
        ("RPO", (experiment.get("rpo") or {}).get("rpo_s"), objective.get("rpo_s")),
    ):
        if _finite(measured):
            bars.append((label, float(measured), float(target) if _finite(target) else None))
    if not bars:
        return None
    with matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(12.5, 0.7 + 0.6 * len(bars)))
        labels = [b[0] for b in bars]
        colours = [ERROR_COLOUR if t is not None and m > t else OK_COLOUR for _, m, t in bars]
        ax.barh(labels, [m for _, m, _ in bars], color=colours, height=0.5, label="measured")
        for i, (_, measured, target) in enumerate(bars):
            text = f" {measured:.3f} s" + (f" (objective {target:g} s)" if target is not None else " (no objective)")
            ax.text(measured, i, text, va="center", fontsize=9)
            if target is not None:
                ax.plot([target, target], [i - 0.35, i + 0.35], color="black", linewidth=2.5)
        ax.plot([], [], color="black", linewidth=2.5, label="objective")
        top = max([m for _, m, _ in bars] + [t for _, _, t in bars if t is not None])
        ax.set_xlim(0, top * 1.6 if top > 0 else 1)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
        ax.set_title(f"Recovery vs objectives: {experiment.get('scenario', '?')}")
        return _svg(fig)


def history_chart(points: Sequence[tuple[str, str, float, bool]]) -> str:
    """p95 per profile across runs: (profile, run label, p95 ms, regressed), oldest first."""
    with matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(12.5, 3.6))
        runs = list(dict.fromkeys(label for _, label, _, _ in points))
        position = {label: i for i, label in enumerate(runs)}
        for profile in dict.fromkeys(p for p, _, _, _ in points):
            mine = [(position[label], p95) for p, label, p95, _ in points if p == profile]
            ax.plot([x for x, _ in mine], [y for _, y in mine], marker="o", linewidth=1.5, label=f"p95 {profile}")
        regressed = [(position[label], p95) for _, label, p95, bad in points if bad]
        if regressed:
            ax.plot(
                [x for x, _ in regressed],
                [y for _, y in regressed],
                "X",
                color=ERROR_COLOUR,
                markersize=12,
                label="regressed",
            )
        ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("run (oldest first)")
        ax.set_ylabel("p95 latency (ms)")
        ax.set_ylim(0, max(p95 for _, _, p95, _ in points) * 1.15 or 1)  # headroom: markers stay whole
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
        ax.set_title("p95 trend per load profile")
        return _svg(fig)
