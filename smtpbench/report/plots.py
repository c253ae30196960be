"""Drawing :class:`~smtpbench.report.figures.Figure` data with matplotlib (the only module that imports it).

matplotlib is imported lazily, inside :func:`render`, and only through its object API with the
Agg canvas: no pyplot, no global figure state, no display needed. PNG and SVG carry no creation
date and SVG ids are salted with the figure name, so rebuilding a report gives the same files.
"""

from __future__ import annotations

import io
import math
import os

from .figures import Figure

DPI = 100
SIZE = (9.0, 3.6)  # inches: 900 x 360 px at DPI; the legend sits right of the axes


def _canvas(fig_data: Figure):
    # The Agg canvas is attached directly: matplotlib.use() is not called, because switching the
    # backend of a process that already uses pyplot would close its figures.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=SIZE, dpi=DPI, )
    fig.subplots_adjust(left=0.075, right=0.7, top=0.9, bottom=0.14)
    FigureCanvasAgg(fig)
    return fig


def _finite(values) -> bool:
    return any(v is not None and not (isinstance(v, float) and math.isnan(v)) and v > 0 for v in values)


def _nan(values) -> list:
    return [math.nan if v is None else v for v in values]


def _draw_lines(ax, ax2, fig_data: Figure) -> None:
    for label, s in fig_data.series.items():
        target = ax2 if s.secondary and ax2 is not None else ax
        target.plot(s.x, _nan(s.y), label=label, linestyle="--" if s.dashed else "-", color=s.color,
                    marker=s.marker or ("." if len(s.x) <= 30 else None), markersize=9 if s.marker else 6,
                    linewidth=1.4)


def _draw_bars(ax, fig_data: Figure) -> None:
    n = max(len(fig_data.series), 1)
    width = 0.8 / n
    for i, (label, s) in enumerate(fig_data.series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(s.x))]
        ax.bar(xs, _nan(s.y), width=width, label=label, color=s.color)
    first = next(iter(fig_data.series.values()), None)
    if first is not None:
        ax.set_xticks(range(len(first.x)), [str(c) for c in first.x])


def _draw_stacked(ax, fig_data: Figure) -> None:
    bottom = None
    for label, s in fig_data.series.items():
        ys = [0 if v is None else v for v in s.y]
        ax.bar(s.x, ys, bottom=bottom, width=0.8, label=label, color=s.color)
        bottom = ys if bottom is None else [a + b for a, b in zip(bottom, ys)]
    if bottom:  # headroom: a bar's bottom is a sticky edge, so an empty class on top pinned the axis to the tallest stack
        ax.set_ylim(0, max(bottom) * 1.05 or 1)


def _draw_stairs(ax, fig_data: Figure) -> None:
    for label, s in fig_data.series.items():
        if len(s.x) == len(s.y) + 1:
            ax.stairs(s.y, s.x, label=label, linestyle="--" if s.dashed else "-", color=s.color, linewidth=1.4)


def _spans_decades(values, factor: float = 20.0) -> bool:
    """Worth a log scale: positive values spreading over more than ``factor`` (else linear reads better)."""
    positive = [v for v in values if v is not None and v == v and v > 0]
    return bool(positive) and max(positive) / min(positive) > factor


def _from_zero(ax, values) -> None:
    """A linear axis of counts, rates or shares starts at 0 (and spans at least 0-1): autoscaled, a
    backlog of 0 throughout drew an axis from -0.04 to 0.04, and rates of 10-20 one from 10."""
    finite = [v for v in values if v is not None and v == v]
    if all(v >= 0 for v in finite):
        ax.set_ylim(0, ax.get_ylim()[1] if any(v > 0 for v in finite) else 1)
    if finite and all(float(v).is_integer() for v in finite):  # counts: no tick at 0.2 of a message
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _log_axis(axis, set_scale) -> None:
    """Log scale with plain labels at 1-2-5 steps (1, 2, 5, 10, 20 ms…), not 6×10⁰."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def render(fig_data: Figure):
    """A matplotlib Figure (Agg canvas) drawing ``fig_data``."""
    fig = _canvas(fig_data)
    ax = fig.add_subplot()
    ax2 = ax.twinx() if any(s.secondary for s in fig_data.series.values()) else None
    if fig_data.shade:
        ax.axvspan(*fig_data.shade, color="#999999", alpha=0.18, label=fig_data.shade_label or None, linewidth=0)
    draw = {"bars": _draw_bars, "stacked": _draw_stacked, "stairs": _draw_stairs}.get(fig_data.kind)
    if draw is None:
        _draw_lines(ax, ax2, fig_data)
    else:
        draw(ax, fig_data)
    primary = [v for s in fig_data.series.values() if not s.secondary for v in s.y]
    if fig_data.ylog and _spans_decades(primary):
        _log_axis(ax.yaxis, ax.set_yscale)
    else:
        _from_zero(ax, primary)
    if ax2 is not None:
        _from_zero(ax2, [v for s in fig_data.series.values() if s.secondary for v in s.y])
    if fig_data.xlog:
        _log_axis(ax.xaxis, ax.set_xscale)
    if fig_data.xticks:
        ax.set_xticks(list(fig_data.xticks), list(fig_data.xticks.values()))
        ax.minorticks_off()
    ax.set_title(fig_data.title, fontsize=11)
    ax.set_xlabel(fig_data.xlabel)
    ax.set_ylabel(fig_data.ylabel)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel(fig_data.y2label)
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if not any(s.y and _finite(s.y) for s in fig_data.series.values()):
        ax.set_ylim(0, 1)
        times = [x for s in fig_data.series.values() for x in s.x if isinstance(x, (int, float))]
        if fig_data.kind == "line" and not fig_data.xlog and times:  # gaps only: the x axis spanned -0.04 to 0.04
            ax.set_xlim(min(times) - 0.5, max(times) + 0.5)
        ax.text(0.5, 0.5, "nothing recorded", transform=ax.transAxes, ha="center", va="center", color="#777777")
    legend = None
    if handles:  # outside the axes: it never hides data
        legend = ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.1 if ax2 else 1.01, 1.0),
                           borderaxespad=0.0)
    _fit(fig, ax, legend)
    return fig


def _fit(fig, ax, legend, pad_px: float = 4.0) -> None:
    """Move the margins until the y-axis labels and the legend are inside the image.

    The fixed margins hold four-digit ticks and short legend entries; "17500" (any run past 10,000
    msgs/s) pushed the axis label "messages/s" off the image's left edge, and "CPU of the busiest of
    2 processes (% of a core)" (any run with --processes 2) ran off its right edge, cut mid-word.
    Narrowing the axes moves the legend (anchored to them) too, hence a few passes.
    """
    width = fig.get_figwidth() * fig.dpi
    for _ in range(3):
        renderer = fig.canvas.get_renderer()
        params = fig.subplotpars
        left = ax.get_tightbbox(renderer).x0
        over = legend.get_window_extent(renderer).x1 - (width - pad_px) if legend is not None else 0.0
        if left >= pad_px and over <= 0:
            return
        fig.subplots_adjust(left=params.left + max(pad_px - left, 0.0) / width,
                            right=params.right - max(over, 0.0) / width)


def to_bytes(fig, fmt: str, salt: str = "") -> bytes:
    """The figure as PNG or SVG bytes, with no timestamp (reproducible files)."""
    import matplotlib

    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": salt or "smtpbench"}):
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    return buf.getvalue()


def save_all(figs: dict[str, Figure], folder: str) -> dict[str, bytes]:
    """Write ``<name>.png`` and ``<name>.svg`` for each figure into ``folder``; return the PNG bytes by name."""
    pngs = {}
    for name, fig_data in figs.items():
        fig = render(fig_data)
        for fmt in ("png", "svg"):
            blob = to_bytes(fig, fmt, salt=name)
            with open(os.path.join(folder, f"{name}.{fmt}"), "wb") as f:
                f.write(blob)
            if fmt == "png":
                pngs[name] = blob
    return pngs
