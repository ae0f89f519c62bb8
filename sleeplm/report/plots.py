"""Figures of one night: the overview (hypnogram, events, SpO2) and the raw-epoch viewer.

Both return a `matplotlib.figure.Figure` built without pyplot, so they are safe to call from
the app's worker threads and nothing stays alive in pyplot's global figure registry.

- `plot_night(rec, hypnogram, events)`: three stacked panels sharing one time axis (hours
  from recording start, labelled with clock times): sleep stages, one row per event kind,
  and SpO2 (%) when the recording has it; the whole night or an epoch range.
- `plot_hypnogram(rec, hypnogram)`: the stage panel alone.
- `plot_epochs(rec, first, last)`: every present signal of an inclusive epoch range in its
  physical unit (uV, %, bpm...), at its own sampling rate.
- `plot_event_criteria(rec, event)`: one event as its scoring rule saw it (airflow envelope
  against its baseline and the rule's thresholds, SpO2 and the desaturation threshold).
- `seconds_at_fraction(fig, x_fraction)`: where a click on a rendered `plot_night` figure
  lands, in seconds from recording start (the app's click-to-view); `click_map(fig)` keeps just
  what that needs (a `ClickMap`), so the app need not keep the figure.

Examples
--------
>>> rec, analysis = tiny_recording(), tiny_analysis()      # a 15-min night (conftest.py)
>>> fig = plot_night(rec, hypnogram=analysis.staging.hypnogram, events=analysis.events)
>>> fig.savefig(tmp_dir / "night.png")
>>> plot_epochs(rec, 12, 13).savefig(tmp_dir / "epochs-12-13.png")
>>> sorted(p.name for p in tmp_dir.iterdir())
['epochs-12-13.png', 'night.png']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sleeplm.io.channels import EXTRA_SIGNALS
from sleeplm.errors import PlotRangeError
from sleeplm.io.recording import CANONICAL_CHANNELS, EPOCH_SEC, POSITION_CODES, Recording
from sleeplm.measure.agreement import technician_events
from sleeplm.terms import ANNOTATED_EVENT_KINDS

__all__ = [
    "MAX_VIEW_EPOCHS", "STAGE_ORDER", "PlotRangeError", "plot_night", "plot_hypnogram", "plot_epochs",
    "seconds_at_fraction", "ClickMap", "click_map", "viewer_channels", "reference_events", "plot_periods", "plot_concept_timeline",
    "plot_event_criteria",
]

logger = logging.getLogger(__name__)

# Ten epochs (5 min) of up to ~15 channels is the most that stays readable on one screen.
MAX_VIEW_EPOCHS = 10
# Top to bottom, the clinical hypnogram convention (wake on top, deep sleep at the bottom).
STAGE_ORDER = ("W", "R", "N1", "N2", "N3")
EVENT_COLOURS = {"apnea": "tab:red", "hypopnea": "tab:orange", "desaturation": "tab:blue", "arousal": "tab:purple"}
# Tag put on the panel whose x axis maps clicks to time (read back by `seconds_at_fraction`).
TIME_AXIS_LABEL = "sleeplm-time-axis"


def reference_events(rec: Recording) -> pd.DataFrame:
    """The file's own scored events with ``start_s``/``end_s`` columns (empty when it has none).

    Examples
    --------
    >>> table = reference_events(tiny_recording())             # the simulator wrote its scoring into the file
    >>> {"kind", "start_s", "end_s"} <= set(table.columns), "apnea" in set(table["kind"])
    (True, True)
    """
    columns = ["kind", "subtype", "start_s", "end_s", "label"]
    if rec.reference is None or rec.reference.events.empty:
        return pd.DataFrame(columns=columns)
    ref = rec.reference.events
    return pd.DataFrame({
        "kind": ref["kind"], "subtype": ref["subtype"], "start_s": ref["onset_s"],
        "end_s": ref["onset_s"] + ref["duration_s"], "label": ref["label"],
    })[columns]


def _clock_ticks(ax, rec: Recording, first_s: float, last_s: float, n_ticks: int = 7) -> None:
    """Ticks in hours from start, labelled with clock times (elapsed time when the clock is unknown)."""
    ticks_s = np.linspace(first_s, last_s, n_ticks)
    ax.set_xticks(ticks_s / 3600)
    ax.set_xticklabels([rec.clock_at(t) or f"+{t / 3600:.1f} h" for t in ticks_s], fontsize=8)
    ax.set_xlim(first_s / 3600, last_s / 3600)


def _stage_panel(ax, hypnogram: np.ndarray | None, stage_source: str | None) -> None:
    if hypnogram is None:
        ax.text(0.5, 0.5, "no sleep stages available", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        return
    levels = {stage: len(STAGE_ORDER) - 1 - i for i, stage in enumerate(STAGE_ORDER)}
    y = np.array([levels.get(str(s), np.nan) for s in hypnogram], dtype=float)
    edges_h = np.arange(len(y) + 1) * EPOCH_SEC / 3600
    ax.stairs(y, edges_h, color="k", baseline=None, linewidth=1)
    # REM drawn thick and red, as in clinical hypnograms.
    ax.stairs(np.where(y == levels["R"], y, np.nan), edges_h, color="tab:red", linewidth=3, baseline=None)
    ax.set_yticks(list(levels.values()), list(levels.keys()), fontsize=8)
    ax.set_ylim(-0.5, len(STAGE_ORDER) - 0.5)
    ax.set_ylabel(f"stage\n({stage_source or 'unknown source'})", fontsize=8)


def _event_panel(ax, events: pd.DataFrame | None) -> None:
    kinds = [k for k in ANNOTATED_EVENT_KINDS if events is not None and (events["kind"] == k).any()]
    if not kinds:
        ax.text(0.5, 0.5, "no events detected", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        return
    for row, kind in enumerate(kinds):
        sel = events[events["kind"] == kind]
        # A minimum width keeps 10-s events visible on an 8-h axis.
        spans = [(s / 3600, max(e - s, 20.0) / 3600) for s, e in zip(sel["start_s"], sel["end_s"])]
        ax.broken_barh(spans, (row - 0.4, 0.8), color=EVENT_COLOURS.get(kind, f"C{row + 4}"))
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    ax.invert_yaxis()


def _spo2_panel(ax, rec: Recording) -> None:
    spo2 = rec.signals.get("SpO2")
    if spo2 is None:
        ax.text(0.5, 0.5, "no SpO2 channel in this recording", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        return
    hours = np.arange(len(spo2.data)) / spo2.sfreq / 3600
    # Oximeters write 0 or out-of-range values while the probe is off: not a saturation.
    data = np.where((spo2.data >= 50) & (spo2.data <= 100), spo2.data, np.nan)
    ax.plot(hours, data, color="tab:blue", linewidth=0.6)
    ax.axhline(90, color="0.6", linestyle="--", linewidth=0.7)
    ax.set_ylabel(f"SpO2 ({spo2.unit})", fontsize=8)
    low = np.nanmin(data) if np.isfinite(data).any() else 85.0
    ax.set_ylim(min(85.0, np.floor(low) - 1), 100.5)


def _checked_span(rec: Recording, first: int, last: int | None, hypnogram: np.ndarray | None) -> tuple[int, int]:
    """The inclusive epoch range (``last`` None = end of night), refused when outside the night."""
    first, last = int(first), rec.n_epochs - 1 if last is None else int(last)
    if not 0 <= first <= last < rec.n_epochs:
        raise PlotRangeError(
            f"epochs {first}-{last} are not a range inside this night (epochs 0-{rec.n_epochs - 1}); "
            "give the earlier epoch first."
        )
    if hypnogram is not None and len(hypnogram) != rec.n_epochs:
        raise PlotRangeError(
            f"the hypnogram has {len(hypnogram)} epochs but the recording {rec.n_epochs}; "
            "pass the hypnogram computed on this recording."
        )
    return first, last


def plot_night(
    rec: Recording,
    hypnogram: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
    stage_source: str | None = None,
    width_in: float = 11.0,
    first: int = 0,
    last: int | None = None,
    comparison: dict | None = None,
) -> Figure:
    """Overview of the night (or of epochs ``first..last``): stages, events and SpO2 on one clock-time axis.

    Parameters
    ----------
    rec : the loaded night.
    hypnogram : stage label per 30-s epoch ("W", "N1", "N2", "N3", "R", "?"); default: the
        file's own scoring when it has one.
    events : DataFrame with columns ``kind``, ``start_s``, ``end_s`` (seconds from recording
        start), as `sleeplm.measure.events.detect_events` returns; default: the file's own scored events.
    stage_source : where the stages come from ("reference scoring", "sleeplm", "yasa"), shown
        on the axis.
    width_in : figure width in inches.
    first, last : inclusive 0-based epoch range shown; default the whole night.
    comparison : `sleeplm.measure.analysis.NightAnalysis.scorings` when the recording came with scoring
        and the product's own was computed too ({"technician": ..., "automatic": ...}, each with
        ``staging`` and ``events``): both hypnograms and both event rows are drawn, one above the
        other (then `hypnogram`, `events` and `stage_source` are not used).

    Returns
    -------
    matplotlib.figure.Figure with three panels (stages, events, SpO2), or five with a `comparison`
    (technician's stages, automatic stages, technician's events, automatic events, SpO2).

    Raises
    ------
    PlotRangeError : range outside the night or reversed; hypnogram of another length.

    Examples
    --------
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> fig = plot_night(rec, hypnogram=analysis.staging.hypnogram, events=analysis.events, stage_source="reference scoring")
    >>> len(fig.axes), "reference scoring" in fig.axes[0].get_ylabel()
    (3, True)
    >>> plot_night(rec, first=20, last=10)
    Traceback (most recent call last):
    ...
    sleeplm.errors.PlotRangeError: ...
    """
    if hypnogram is None and rec.reference is not None and rec.reference.stages is not None:
        hypnogram, stage_source = rec.reference.stages, stage_source or "reference scoring"
    if events is None and rec.reference is not None:
        events = reference_events(rec)
    if comparison is not None and {"technician", "automatic"} <= set(comparison):
        scorings = [comparison["technician"], comparison["automatic"]]
        for scored in scorings:
            _checked_span(rec, first, last, scored.staging.hypnogram)
        first, last = _checked_span(rec, first, last, None)
        fig = Figure(figsize=(width_in, 8.0))
        axes = fig.subplots(5, 1, sharex=True, height_ratios=(1.3, 1.3, 1.2, 1.2, 1))
        for ax, scored, who in zip(axes[:2], scorings, ("technician", "automatic")):
            _stage_panel(ax, scored.staging.hypnogram, f"{who}: {scored.staging.source}")
        # The technician's own events only (kinds they did not score are measured in their scoring's table).
        for ax, events_of, who in zip(axes[2:4], (technician_events(rec), scorings[1].events), ("technician", "automatic")):
            _event_panel(ax, events_of)
            ax.set_ylabel(f"events\n({who})", fontsize=8)
        ax_spo2 = axes[4]
    else:
        first, last = _checked_span(rec, first, last, hypnogram)
        fig = Figure(figsize=(width_in, 5.2))
        ax_stage, ax_events, ax_spo2 = fig.subplots(3, 1, sharex=True, height_ratios=(1.3, 1.2, 1))
        _stage_panel(ax_stage, hypnogram, stage_source)
        _event_panel(ax_events, events)
    _spo2_panel(ax_spo2, rec)
    _time_axis(ax_spo2, rec, first, last)
    ax_spo2.set_label(TIME_AXIS_LABEL)
    fig.tight_layout(h_pad=0.3)
    return fig


def plot_periods(
    rec: Recording, periods: pd.DataFrame, hypnogram: np.ndarray | None = None, events: pd.DataFrame | None = None,
    stage_source: str | None = None, first: int = 0, last: int | None = None, width_in: float = 11.0,
) -> Figure:
    """Timeline of ranked periods: the `plot_night` overview with each period shaded and numbered by rank.

    Parameters
    ----------
    periods : `sleeplm.measure.periods.event_periods` table (``rank``, ``start_s``, ``end_s``).
    Other parameters are those of `plot_night`.

    Returns
    -------
    matplotlib.figure.Figure (stages, events and SpO2 panels; rank 1 shaded darkest).

    Examples
    --------
    >>> from sleeplm.measure.periods import event_periods
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> periods = event_periods(analysis.events, rec.n_epochs, analysis.staging.hypnogram, gap_s=60)
    >>> fig = plot_periods(rec, periods, analysis.staging.hypnogram, analysis.events)
    >>> len(fig.axes), sorted(t.get_text() for t in fig.axes[0].texts) == [f"#{r}" for r in sorted(periods["rank"])]
    (3, True)
    """
    fig = plot_night(rec, hypnogram, events, stage_source, width_in=width_in, first=first, last=last)
    axes = fig.axes
    for row in periods.itertuples(index=False):
        shade = max(0.12, 0.45 - 0.06 * (int(row.rank) - 1))
        for ax in axes:
            ax.axvspan(row.start_s / 3600, max(row.end_s, row.start_s + 60) / 3600, color="gold", alpha=shade, linewidth=0)
        axes[0].text((row.start_s + row.end_s) / 2 / 3600, 1.02, f"#{int(row.rank)}", transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=8, fontweight="bold")
    return fig


def plot_hypnogram(rec: Recording, hypnogram: np.ndarray, stage_source: str | None = None, first: int = 0,
                   last: int | None = None, width_in: float = 11.0) -> Figure:
    """The sleep stages of the night (or of epochs ``first..last``) on a clock-time axis.

    Parameters are those of `plot_night`; `hypnogram` is required. Returns a one-panel Figure.

    Examples
    --------
    >>> fig = plot_hypnogram(tiny_recording(), tiny_analysis().staging.hypnogram, "reference scoring", first=0, last=9)
    >>> len(fig.axes), [t.get_text() for t in fig.axes[0].get_yticklabels()]
    (1, ['W', 'R', 'N1', 'N2', 'N3'])
    """
    first, last = _checked_span(rec, first, last, hypnogram)
    fig = Figure(figsize=(width_in, 2.4))
    ax = fig.subplots()
    _stage_panel(ax, hypnogram, stage_source)
    _time_axis(ax, rec, first, last)
    fig.tight_layout()
    return fig


def _time_axis(ax, rec: Recording, first: int, last: int) -> None:
    """Clock-time ticks over epochs ``first..last`` and the axis label."""
    _clock_ticks(ax, rec, first * EPOCH_SEC, (last + 1) * EPOCH_SEC)
    ax.set_xlabel("clock time" if rec.start_seconds is not None else "time from recording start", fontsize=8)


@dataclass(frozen=True)
class ClickMap:
    """Where the time axis of a rendered `plot_night` figure lies: maps a horizontal position on the
    image to a time without keeping the figure (a few numbers instead of megabytes of artists).

    Attributes
    ----------
    width_in : the figure's width in inches (pixels = inches x the dpi it was saved with).
    x0, x1 : left and right ends of the time axis, as fractions of the figure's width.
    start_h, end_h : hours from recording start at `x0` and `x1`.
    """

    width_in: float
    x0: float
    x1: float
    start_h: float
    end_h: float

    def seconds_at(self, x_fraction: float) -> float | None:
        """Seconds from recording start at `x_fraction` of the figure's width (None off the time axis).

        Examples
        --------
        >>> ClickMap(width_in=10.0, x0=0.1, x1=0.9, start_h=0.0, end_h=8.0).seconds_at(0.5)
        14400.0
        >>> ClickMap(width_in=10.0, x0=0.1, x1=0.9, start_h=0.0, end_h=8.0).seconds_at(0.05) is None
        True
        """
        if not self.x0 <= x_fraction <= self.x1:
            return None
        return (self.start_h + (x_fraction - self.x0) / (self.x1 - self.x0) * (self.end_h - self.start_h)) * 3600


def click_map(fig: Figure) -> ClickMap:
    """The `ClickMap` of a figure from `plot_night`, rendered without cropping (no ``bbox_inches="tight"``).

    Examples
    --------
    >>> fig = plot_night(tiny_recording())                     # the whole 15-min night
    >>> where = click_map(fig)
    >>> round(where.seconds_at(where.x0)), round(where.seconds_at(where.x1)), where.width_in
    (0, 900, 11.0)
    """
    axes = [ax for ax in fig.axes if ax.get_label() == TIME_AXIS_LABEL]
    if not axes:
        raise PlotRangeError("this figure was not made by plot_night, so it has no time axis to click on.")
    box = axes[0].get_position()
    start_h, end_h = axes[0].get_xlim()
    return ClickMap(float(fig.get_size_inches()[0]), float(box.x0), float(box.x1), float(start_h), float(end_h))


def seconds_at_fraction(fig: Figure, x_fraction: float) -> float | None:
    """Seconds from recording start under a horizontal position of a `plot_night` figure.

    Parameters
    ----------
    fig : a figure from `plot_night`, rendered without cropping (no ``bbox_inches="tight"``).
    x_fraction : horizontal position as a fraction of the figure's width (0 = left edge).

    Returns
    -------
    float seconds, or None when the position is outside the plotted time axis.

    Examples
    --------
    >>> fig = plot_night(tiny_recording())                     # the whole 15-min night
    >>> axis = fig.axes[0].get_position()                      # where the time axis sits in the figure
    >>> round(seconds_at_fraction(fig, axis.x0)), round(seconds_at_fraction(fig, axis.x1))
    (0, 900)
    >>> seconds_at_fraction(fig, 0.001) is None                # the left margin is not on the axis
    True
    """
    return click_map(fig).seconds_at(x_fraction)


def viewer_channels(rec: Recording) -> list[str]:
    """Names of the signals `plot_epochs` draws: present SleepLM channels, then extras, in a fixed order.

    Examples
    --------
    >>> viewer_channels(tiny_recording())
    ['ECG', 'ABD', 'THX', 'AF', 'EOG_Left', 'EOG_Right', 'EEG_C3_A2', 'EEG_C4_A1', 'EMG_Chin', 'POS', 'SpO2', 'HR', 'Snore', 'Pressure']
    """
    names = [name for name in CANONICAL_CHANNELS if rec.has(name) and name in rec.signals]
    return names + [name for name in EXTRA_SIGNALS if name in rec.signals]


def plot_epochs(rec: Recording, first: int, last: int, channels: list[str] | None = None) -> Figure:
    """Raw signals of the inclusive epoch range ``first..last`` in physical units.

    Parameters
    ----------
    rec : the loaded night.
    first, last : inclusive 0-based epoch indices, at most `MAX_VIEW_EPOCHS` epochs apart.
    channels : signal names to draw; default `viewer_channels(rec)` (every present channel).

    Returns
    -------
    matplotlib.figure.Figure, one row per channel, y axis in the channel's unit, x axis in
    clock time (seconds resolution).

    Raises
    ------
    PlotRangeError : range outside the night, reversed, longer than `MAX_VIEW_EPOCHS`, or no signal to draw.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> fig = plot_epochs(rec, 12, 13, channels=["EEG_C3_A2", "SpO2"])
    >>> [ax.get_ylabel().replace(chr(10), " ") for ax in fig.axes]     # name and unit per row
    ['EEG_C3_A2 [uV]', 'SpO2 [%]']
    >>> plot_epochs(rec, 0, 20)                                # more than MAX_VIEW_EPOCHS
    Traceback (most recent call last):
    ...
    sleeplm.errors.PlotRangeError: ...
    """
    first, last = _checked_span(rec, first, last, None)
    if last - first + 1 > MAX_VIEW_EPOCHS:
        raise PlotRangeError(
            f"{last - first + 1} epochs asked; the viewer shows at most {MAX_VIEW_EPOCHS} epochs "
            f"({MAX_VIEW_EPOCHS * EPOCH_SEC // 60} min) at once. Pick a shorter range."
        )
    names = viewer_channels(rec) if channels is None else [c for c in channels if c in rec.signals]
    if not names:
        raise PlotRangeError("this recording has no signals to show; check the preflight channel table.")
    start_s, end_s = first * EPOCH_SEC, (last + 1) * EPOCH_SEC
    fig = Figure(figsize=(11, 0.75 * len(names) + 1.2))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        signal = rec.signals[name]
        lo, hi = int(round(start_s * signal.sfreq)), int(round(end_s * signal.sfreq))
        seconds = np.arange(lo, hi) / signal.sfreq
        data = signal.data[lo:hi]
        if name == "POS":
            ax.step(seconds / 3600, data, where="post", color="k", linewidth=0.8)
            codes = sorted({int(c) for c in np.unique(data) if int(c) in POSITION_CODES})
            ax.set_yticks(codes, [POSITION_CODES[c] for c in codes], fontsize=7)
        else:
            ax.plot(seconds / 3600, data, color="k", linewidth=0.4)
            ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel(f"{name}\n[{signal.unit}]", rotation=0, ha="right", va="center", fontsize=8)
    # Epoch boundaries help match the figure to cited epoch numbers.
    for ax in axes:
        for boundary in range(first + 1, last + 1):
            ax.axvline(boundary * EPOCH_SEC / 3600, color="0.75", linewidth=0.6)
    _clock_ticks(axes[-1], rec, start_s, end_s, n_ticks=min(last - first + 2, 7))
    where = f"epochs {first}-{last}" if last > first else f"epoch {first}"
    clock = f"{rec.clock_at(start_s)}-{rec.clock_at(end_s)}, " if rec.start_seconds is not None else ""
    fig.suptitle(f"Raw signals, {clock}{where} (physical units)", fontsize=9)
    fig.tight_layout(h_pad=0.2)
    return fig


_CONCEPT_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive"]


def plot_concept_timeline(rec: Recording, curves: dict[str, np.ndarray], periods: dict[str, list[tuple[int, int]]],
                          ylabel: str, hypnogram: np.ndarray | None = None, stage_source: str | None = None,
                          width_in: float = 11.0) -> Figure:
    """Per-epoch scores of one or more concepts across the night, their top periods shaded.

    Parameters
    ----------
    rec : the night (clock-time axis).
    curves : concept -> smoothed score per epoch (length ``rec.n_epochs``), overlaid in one panel.
    periods : concept -> inclusive (first, last) epoch ranges to shade in that concept's colour.
    ylabel : what the score is (e.g. "SleepLM similarity").
    hypnogram, stage_source : drawn in a panel below when given.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> curve = np.linspace(0.0, 1.0, rec.n_epochs)
    >>> fig = plot_concept_timeline(rec, {"alpha intrusion": curve}, {"alpha intrusion": [(20, 29)]}, "similarity")
    >>> len(fig.axes), [line.get_label() for line in fig.axes[0].lines]
    (1, ['alpha intrusion'])
    """
    panels = 2 if hypnogram is not None else 1
    fig = Figure(figsize=(width_in, 2.6 + 1.6 * (panels - 1)))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False, height_ratios=[2, 1][:panels])[:, 0]
    centres_h = (np.arange(rec.n_epochs) + 0.5) * EPOCH_SEC / 3600
    for index, (concept, curve) in enumerate(curves.items()):
        colour = _CONCEPT_COLOURS[index % len(_CONCEPT_COLOURS)]
        axes[0].plot(centres_h, curve, color=colour, linewidth=1.2, label=concept)
        for first, last in periods.get(concept, []):
            axes[0].axvspan(first * EPOCH_SEC / 3600, (last + 1) * EPOCH_SEC / 3600, color=colour, alpha=0.18, linewidth=0)
    axes[0].set_ylabel(ylabel, fontsize=8)
    axes[0].legend(fontsize=8, loc="upper right")
    if hypnogram is not None:
        _stage_panel(axes[1], hypnogram, stage_source)
    _time_axis(axes[-1], rec, 0, rec.n_epochs - 1)
    fig.tight_layout()
    return fig



# Seconds shown before and after an explained event.
EVENT_VIEW_BEFORE_S, EVENT_VIEW_AFTER_S = 90, 60


def plot_event_criteria(rec: Recording, event: dict | pd.Series, near_misses: pd.DataFrame | None = None) -> Figure:
    """An event as its rule saw it: the airflow envelope against its baseline with the rule's
    reduction thresholds, and SpO2 with its pre-event level and the desaturation threshold.

    Parameters
    ----------
    rec : the loaded night.
    event : a row of the events (or near-miss) table with ``evidence["criteria"]``
        (`sleeplm.measure.events.detect_events`): an apnea, hypopnea, desaturation or near-miss.
    near_misses : the night's near-misses, drawn greyed when they fall in the window.

    Returns
    -------
    matplotlib.figure.Figure: the envelope panel (% of baseline; 100 % = the baseline, dashed
    lines at the rule's hypopnea and apnea reductions) for breathing events, the SpO2 panel when
    the recording has SpO2; the event shaded (grey for a near-miss).

    Examples
    --------
    >>> from sleeplm.measure.events import score_events
    >>> rec = tiny_recording()
    >>> scored = score_events(rec, rec.reference.stages)          # the product's own events, with their criteria
    >>> apnea = scored.events[scored.events.kind == "apnea"].iloc[0]
    >>> fig = plot_event_criteria(rec, apnea, scored.near_misses)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['airflow (AF)\\n% of baseline', 'SpO2 (%)']
    """
    from sleeplm.measure.respiratory import DESAT_NADIR_AFTER_S, flow_ratio, spo2_per_second
    from sleeplm.measure.rules import RULES

    evidence = event["evidence"] if isinstance(event["evidence"], dict) else {}
    criteria = evidence.get("criteria") or {}
    rule = RULES.get(criteria.get("rule"))
    near = event["kind"] == "near_miss"
    start, end = float(event["start_s"]), float(event["end_s"])
    lo = max(start - EVENT_VIEW_BEFORE_S, 0.0)
    hi = min(end + EVENT_VIEW_AFTER_S, rec.n_epochs * EPOCH_SEC)
    n_seconds = rec.n_epochs * EPOCH_SEC
    channel = evidence.get("channel")
    flow = flow_ratio(rec, channel, np.zeros(n_seconds, dtype=bool)) if channel else None
    spo2 = spo2_per_second(rec, np.zeros(n_seconds, dtype=bool))
    panels = [p for p, present in (("flow", flow is not None), ("spo2", spo2 is not None)) if present]
    if not panels:
        raise PlotRangeError("this event has neither an airflow nor an SpO2 signal to draw.")
    fig = Figure(figsize=(10, 2.4 * len(panels) + 0.8))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    seconds = np.arange(int(lo), int(hi))
    shade = "0.8" if near else EVENT_COLOURS.get(event["kind"], "tab:red")
    for ax, panel in zip(axes, panels):
        ax.axvspan(start / 3600, end / 3600, color=shade, alpha=0.35, linewidth=0)
        if near_misses is not None and len(near_misses):
            others = near_misses[(near_misses["end_s"] > lo) & (near_misses["start_s"] < hi)]
            for s, e in zip(others["start_s"], others["end_s"]):
                if (s, e) != (start, end):
                    ax.axvspan(s / 3600, e / 3600, color="0.85", alpha=0.5, linewidth=0, hatch="//")
        if panel == "flow":
            ax.plot(seconds / 3600, 100 * flow[0][seconds], color="k", linewidth=0.8)
            ax.axhline(100, color="tab:green", linewidth=0.8)
            if rule is not None:
                for drop, label in ((rule.hypopnea_drop_pct, "hypopnea"), (rule.apnea_drop_pct, "apnea")):
                    ax.axhline(100 - drop, color="tab:orange" if label == "hypopnea" else "tab:red", linestyle="--",
                               linewidth=0.8)
                    ax.text(lo / 3600, 100 - drop, f" {label}: >= {drop:g} % drop", fontsize=7, va="bottom")
            ax.set_ylabel(f"airflow ({channel})\n% of baseline", fontsize=8)
            ax.set_ylim(0, 160)
        else:
            ax.plot(seconds / 3600, spo2[seconds], color="tab:blue", linewidth=0.8)
            before = spo2[int(max(start - 30, 0)) : int(start) + 1]
            level = evidence.get("baseline_pct") or (float(np.nanmax(before)) if np.isfinite(before).any() else None)
            needed = (rule.hypopnea_desat_pct if rule is not None and rule.hypopnea_desat_pct is not None else 3.0)
            if level is not None:
                ax.axhline(level, color="tab:green", linewidth=0.8)
                ax.axhline(level - needed, color="tab:blue", linestyle="--", linewidth=0.8)
                ax.text(lo / 3600, level - needed, f" desaturation: >= {needed:g} % below {level:g} %", fontsize=7,
                        va="top")
            if event["kind"] != "desaturation":
                ax.axvspan(start / 3600, (end + DESAT_NADIR_AFTER_S) / 3600, color="tab:blue", alpha=0.06, linewidth=0)
            ax.set_ylabel("SpO2 (%)", fontsize=8)
    _clock_ticks(axes[-1], rec, lo, hi, n_ticks=6)
    kind = f"near-miss ({event['subtype']})" if near else event["kind"]
    title = f"{kind} {event.get('event_id') or ''} under rule {criteria.get('rule', '?')}"
    if event.get("confidence") is not None and np.isfinite(event["confidence"]):
        title += f", confidence {event['confidence']:.2f}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(h_pad=0.3)
    return fig
