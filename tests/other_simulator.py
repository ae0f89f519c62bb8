"""A second, independent PSG simulator for end-to-end checks of the product (tests and bench only).

The product's own simulator (`sleeplm.synthetic`) was written next to the detectors, by the same
rules, so it cannot show what they miss. This one is written from the clinical definitions
(AASM, the SCORING.md clinical definitions of the project brief) and textbook physiology, with its own ground truth, and
it differs from ours the way another lab's files do:

- channel labels of other vendors ("EEG C4-M1", "C3:A2", "Thor", "Abdo", "Flow Patient",
  "Nasal Pressure", "SaO2", "Pulse", "ECG II", "Chin1-Chin2", "Left Leg"), monopolar electrodes
  that must be re-referenced, and physical units other than microvolts;
- other sampling rates (EEG 200/256/500 Hz, SpO2 and pulse 1 Hz, effort belts 10/25 Hz, airflow
  32/100 Hz) and data-record durations (1, 2, 5 s), nights that are not a whole number of epochs;
- EDF+ with the scoring in its own annotations, or plain EDF with a separate EDF+ scoring file;
  stage labels in three styles ("Sleep stage 2", "N2", "Stage 2 sleep|NREM2"), event labels in
  several styles, and a 20-s (R&K) scoring epoch;
- physiology of other shapes: apneas of 10-60 s with effort that goes on and turns paradoxical
  (obstructive) or stops (central); hypopneas with a 35-55 % flow reduction, flattened inspiration
  on the nasal pressure (which is not linearised: it follows flow squared), followed by 3 % or 4 %
  desaturations that fall gradually or abruptly, or by an arousal only; recovery breaths; an
  integer-valued oximeter; periodic limb movements on a leg channel; a lead-off / probe-off stretch;
  decoys a scorer must NOT score (an 8-14 % flow dip, an 8-s dip, a 2 % desaturation);
- a night starting at 22:47:13 that crosses midnight (or any other start).

Ground truth follows the AASM rules as a scorer would apply them to the planted physiology:
apneas and hypopneas (rule 1A: >= 3 % desaturation or an arousal) in sleep, desaturations
>= 3 %, arousals, limb movements, stages per 30-s epoch. Stages change on whole minutes so a
20-s and a 30-s scoring of the same night agree.

Examples
--------
>>> night = simulate_other_night(SITES["edfplus_rk"], minutes=12, seed=1)
>>> night.truth.stages.size, night.truth.start_clock
(24, '22:47:13')
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from edfio import Edf, EdfAnnotation, EdfSignal
from scipy.fft import next_fast_len
from scipy.signal import lfilter

__all__ = ["Site", "SITES", "Truth", "OtherNight", "simulate_other_night", "write_other_night", "SCORED_KINDS"]

EPOCH_S = 30
RESP_HZ = 100.0  # master grid of the breathing model; each channel is sampled from it at its own rate
SLEEP = ("N1", "N2", "N3", "R")
SCORED_KINDS = ("apnea", "hypopnea", "desaturation", "arousal", "limb_movement")


@dataclass(frozen=True)
class Site:
    """How one (imaginary) lab records and scores: labels, rates, units, file layout, annotation style.

    Roles: eeg_c3, eeg_c4 (each either one bipolar label or monopolar ``(active, reference)``),
    eog_l, eog_r, chin, ecg, thor, abdo, flow, pressure, spo2, pulse, leg.
    """

    name: str
    labels: dict[str, str]
    rates: dict[str, float]
    units: dict[str, str]
    record_s: float
    plus: bool  # EDF+ with the scoring inside; False: plain EDF and a separate EDF+ scoring file
    stage_labels: dict[str, str]
    event_labels: dict[str, str]
    stage_epoch_s: int = 30
    monopolar: tuple[str, ...] = ()  # roles written as two monopolar electrodes (label "A-B" split)
    start: dt.time = dt.time(22, 47, 13)


SITES: dict[str, Site] = {
    # EDF+, Sleep-EDF/R&K-like stage words, 30-s epochs, 1-s records, EEG 256 Hz.
    "edfplus_rk": Site(
        name="edfplus_rk",
        labels={"eeg_c4": "EEG C4-M1", "eeg_c3": "EEG C3-M2", "eog_l": "EOG E1-M2", "eog_r": "EOG E2-M1",
                "chin": "EMG Chin1-Chin2", "ecg": "ECG II", "thor": "Thor", "abdo": "Abdo", "flow": "Flow Patient",
                "pressure": "Nasal Pressure", "spo2": "SaO2", "pulse": "Pulse", "leg": "Left Leg"},
        rates={"eeg": 256, "eog": 256, "chin": 256, "ecg": 256, "thor": 25, "abdo": 25, "flow": 32,
               "pressure": 100, "spo2": 1, "pulse": 1, "leg": 200},
        units={"eeg": "uV", "eog": "uV", "chin": "uV", "ecg": "uV", "thor": "uV", "abdo": "uV", "flow": "uV",
               "pressure": "cmH2O", "spo2": "%", "pulse": "bpm", "leg": "uV"},
        record_s=1.0, plus=True,
        stage_labels={"W": "Sleep stage W", "N1": "Sleep stage 1", "N2": "Sleep stage 2", "N3": "Sleep stage 3",
                      "R": "Sleep stage R"},
        event_labels={"apnea/obstructive": "Obstructive Apnea", "apnea/central": "Central Apnea",
                      "hypopnea": "Hypopnea", "desaturation": "SpO2 desaturation", "arousal": "Arousal",
                      "limb_movement": "Limb Movement"},
    ),
    # EDF+, AASM short codes in 20-s epochs, colon-separated derivations, millivolt belts, 2-s records.
    "edfplus_20s": Site(
        name="edfplus_20s",
        labels={"eeg_c4": "C4:A1", "eeg_c3": "C3:A2", "eog_l": "E1:M2", "eog_r": "E2:M1", "chin": "Chin1-Chin2",
                "ecg": "EKG", "thor": "Thorax", "abdo": "Abdomen", "flow": "Flow Patient", "pressure": "Nasal Pressure",
                "spo2": "SpO2", "pulse": "Pulse", "leg": "Leg L"},
        rates={"eeg": 200, "eog": 200, "chin": 200, "ecg": 200, "thor": 10, "abdo": 10, "flow": 100,
               "pressure": 100, "spo2": 1, "pulse": 1, "leg": 200},
        units={"eeg": "uV", "eog": "uV", "chin": "uV", "ecg": "mV", "thor": "mV", "abdo": "mV", "flow": "mV",
               "pressure": "mbar", "spo2": "%", "pulse": "bpm", "leg": "uV"},
        record_s=2.0, plus=True, stage_epoch_s=20, start=dt.time(23, 41, 7),
        stage_labels={"W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "R": "R"},
        event_labels={"apnea/obstructive": "Obstructive apnea|Obstructive Apnea",
                      "apnea/central": "Central apnea|Central Apnea", "hypopnea": "Hypopnea|Hypopnea",
                      "desaturation": "SpO2 desaturation|SpO2 desaturation", "arousal": "Arousal|Arousal ()",
                      "limb_movement": "Limb movement - left|Limb Movement (Left)"},
    ),
    # Plain EDF (no annotations) at 500 Hz, monopolar EEG/EOG/chin, a separate Compumedics-style scoring file.
    "edf_separate": Site(
        name="edf_separate",
        labels={"eeg_c4": "C4-M1", "eeg_c3": "C3-M2", "eog_l": "E1-M2", "eog_r": "E2-M1", "chin": "Chin1-Chin2",
                "ecg": "ECG II", "thor": "Thor", "abdo": "Abdo", "flow": "Airflow", "pressure": "Nasal Pressure",
                "spo2": "SaO2", "pulse": "Pulse Rate", "leg": "Left Leg"},
        rates={"eeg": 500, "eog": 500, "chin": 500, "ecg": 500, "thor": 25, "abdo": 25, "flow": 32,
               "pressure": 32, "spo2": 1, "pulse": 1, "leg": 500},
        units={"eeg": "uV", "eog": "uV", "chin": "uV", "ecg": "uV", "thor": "uV", "abdo": "uV", "flow": "uV",
               "pressure": "uV", "spo2": "%", "pulse": "bpm", "leg": "uV"},
        record_s=5.0, plus=False, monopolar=("eeg_c3", "eeg_c4", "eog_l", "eog_r", "chin"), start=dt.time(0, 12, 40),
        stage_labels={"W": "Wake|Wake", "N1": "Stage 1 sleep|NREM1", "N2": "Stage 2 sleep|NREM2",
                      "N3": "Stage 3 sleep|NREM3", "R": "REM sleep|REM"},
        event_labels={"apnea/obstructive": "Obstructive Apnea", "apnea/central": "Central Apnea",
                      "hypopnea": "Hypopnea", "desaturation": "Desaturation", "arousal": "Arousal (ARO SPONT)",
                      "limb_movement": "PLM"},
    ),
}


@dataclass
class Truth:
    """What the simulator planted, as a scorer applying the AASM rules would score it.

    Attributes
    ----------
    stages : stage per 30-s epoch ("W", "N1", "N2", "N3", "R").
    events : DataFrame ``kind, subtype, start_s, end_s, drop_pct, arousal`` for the scored kinds
        (`SCORED_KINDS`); hypopneas carry their desaturation (``drop_pct``, 0 when only an
        arousal qualifies them) and whether an arousal follows.
    decoys : changes a scorer must not score (sub-threshold dips), same columns.
    artefacts : ``(role, start_s, end_s)`` of the lead-off / probe-off stretches.
    start_seconds : clock start, seconds after midnight.
    duration_s : recorded seconds (not a whole number of epochs).
    """

    stages: np.ndarray
    events: pd.DataFrame
    decoys: pd.DataFrame
    artefacts: list[tuple[str, float, float]]
    start_seconds: float
    duration_s: float

    @property
    def start_clock(self) -> str:
        s = int(self.start_seconds)
        return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

    def clock(self, elapsed_s: float) -> str:
        """Clock time (HH:MM:SS, wrapping at midnight) `elapsed_s` after the start."""
        s = int(self.start_seconds + elapsed_s) % 86400
        return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

    @property
    def tst_h(self) -> float:
        return float(np.isin(self.stages, SLEEP).sum() * EPOCH_S / 3600)

    def of(self, *kinds: str) -> pd.DataFrame:
        return self.events[self.events["kind"].isin(kinds)].reset_index(drop=True)

    def ahi(self, rule: str = "1A") -> float:
        """(apneas + hypopneas) per hour of sleep; rule "1B" keeps hypopneas with >= 4 % desaturation only."""
        hyp = self.of("hypopnea")
        n_hyp = len(hyp) if rule == "1A" else int((hyp["drop_pct"] >= 4).sum())
        return (len(self.of("apnea")) + n_hyp) / self.tst_h

    def odi(self, min_drop: float = 3.0) -> float:
        desats = self.of("desaturation")
        return float((desats["drop_pct"] >= min_drop).sum()) / self.tst_h


@dataclass
class OtherNight:
    """A simulated night: per-role signals at their own rates, truth, and the site that records it."""

    site: Site
    signals: dict[str, np.ndarray]
    truth: Truth
    seed: int
    notes: list[str] = field(default_factory=list)


# ---- hypnogram -------------------------------------------------------------------------------------

def _hypnogram_minutes(minutes: int, rng: np.random.Generator) -> list[str]:
    """Stage per minute: sleep onset after a few minutes awake, NREM-REM cycles of ~90 min (compressed
    proportionally for short nights), N3 early, REM longer later, brief awakenings, awake at the end."""
    scale = min(1.0, minutes / 420)
    out = ["W"] * max(3, int(round(rng.uniform(8, 18) * scale)))
    cycle = 0
    while len(out) < minutes - 2:
        late = cycle / 4
        plan = [("N1", rng.uniform(2, 5)), ("N2", rng.uniform(12, 22)), ("N3", rng.uniform(25, 35) * (1 - late)),
                ("N2", rng.uniform(6, 14)), ("R", rng.uniform(8, 14) + 14 * late)]
        if rng.random() < 0.5:
            plan.append(("W", rng.uniform(1, 3)))
        for stage, length in plan:
            out += [stage] * max(1, int(round(length * max(scale, 0.22))))
        cycle += 1
    out = out[: minutes - 2] + ["W", "W"]
    return out


# ---- building blocks ---------------------------------------------------------------------------------

def _band_noise(n: int, fs: float, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise band-limited to lo-hi Hz (FFT brick wall with soft edges)."""
    m = next_fast_len(n, real=True)  # a prime length would make the FFT crawl
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / fs)
    edge = 0.15 * (hi - lo) + 0.05
    gain = np.clip((f - lo + edge) / edge, 0, 1) * np.clip((hi + edge - f) / edge, 0, 1)
    x = np.fft.irfft(spec * gain, m)[:n]
    return x / (x.std() + 1e-12)


def _pink(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise above 0.3 Hz (the EEG background)."""
    m = next_fast_len(n, real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / fs)
    x = np.fft.irfft(spec / np.sqrt(np.maximum(f, 0.3)), m)[:n]
    return x / x.std()


def _per_second_to(values: np.ndarray, n: int, fs: float, smooth_s: float = 1.0) -> np.ndarray:
    """A per-second curve as a per-sample one (linear interpolation after a moving average)."""
    k = max(int(smooth_s), 1)
    v = np.convolve(np.pad(values, (k, k), mode="edge"), np.ones(k) / k, mode="same")[k:-k]
    return np.interp(np.arange(n) / fs, np.arange(len(v)) + 0.5, v)


def _slow_walk(n_s: int, sd: float, corr_s: float, rng: np.random.Generator) -> np.ndarray:
    """A slowly varying zero-mean curve per second (smoothed noise of standard deviation `sd`)."""
    x = np.convolve(rng.standard_normal(n_s + int(4 * corr_s)), np.hanning(int(2 * corr_s) + 1), mode="same")
    x = x[int(2 * corr_s): int(2 * corr_s) + n_s]
    return sd * x / (x.std() + 1e-12)


# ---- event plan --------------------------------------------------------------------------------------

# Planted episodes are dealt from shuffled decks of these cards, so that even a short night holds
# every kind. Decoys are not events (sub-threshold): 3 of 16 cards.
_DECK = (("obstructive_apnea", 4), ("central_apnea", 2), ("hypopnea_4", 3), ("hypopnea_3", 3), ("hypopnea_arousal", 1),
         ("decoy_shallow", 1), ("decoy_short", 1), ("decoy_2pct", 1))


def _plan_episodes(stage_s: np.ndarray, blocked: np.ndarray, ahi: float, rng: np.random.Generator) -> list[dict]:
    """Respiratory episodes in sleep (not in N3 and not in blocked seconds), about `ahi` scored ones per hour."""
    deck = [name for name, count in _DECK for _ in range(count)]
    scored_share = sum(not name.startswith("decoy") for name in deck) / len(deck)
    mean_gap = 3600 / (ahi / scored_share)
    plan, t, n, hand = [], 60.0, len(stage_s), []
    while t < n - 200:
        hand = hand or list(rng.permutation(deck))
        kind = str(hand[0])
        dur = {"obstructive_apnea": rng.uniform(12, 60), "central_apnea": rng.uniform(10, 30),
               "decoy_short": rng.uniform(6, 8)}.get(kind, rng.uniform(14, 40))
        need = slice(int(t) - 15, int(t + dur) + 45)
        if np.isin(stage_s[need], ("N1", "N2", "R")).all() and not blocked[need].any():
            plan.append({"episode": kind, "start_s": round(float(t), 1), "end_s": round(float(t + dur), 1)})
            hand.pop(0)
            t += dur + 25.0 + rng.exponential(max(mean_gap - 60.0, 10.0))
        else:
            t += 20.0
    return plan


def _desat_curve(spo2: np.ndarray, ep: dict, drop: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Carve a desaturation of `drop` % into `spo2` (per second, before rounding) after episode `ep`;
    returns (fall start, nadir time, recovered time) in s. Half fall gradually from ~15 s into the
    event, half abruptly just after it ends (circulation delay)."""
    start, end = ep["start_s"], ep["end_s"]
    if rng.random() < 0.5:
        fall, nadir = start + rng.uniform(12, 16), end + rng.uniform(8, 14)  # gradual
    else:
        fall = end + rng.uniform(2, 5)
        nadir = fall + rng.uniform(4, 7)  # abrupt
    back = nadir + rng.uniform(10, 16)
    base = spo2[int(fall) - 5: int(fall)].mean()
    t = np.arange(int(fall), int(back) + 1, dtype=float)
    shape = np.where(t <= nadir, (t - fall) / (nadir - fall), 1 - (t - nadir) / (back - nadir))
    spo2[int(fall): int(back) + 1] = base - drop * np.clip(shape, 0, 1)
    return float(fall), float(nadir), float(back)


# ---- the night -------------------------------------------------------------------------------------

def simulate_other_night(site: Site, minutes: float = 40, seed: int = 0, ahi: float = 30.0,
                         lead_off: bool = True, plm: bool = True) -> OtherNight:
    """Simulate one night as `site` records it.

    Parameters
    ----------
    site : one of `SITES` (labels, rates, units, layout, annotation style).
    minutes : recording length; the file holds a few extra seconds (not a whole epoch).
    seed : random seed (the whole night follows from it).
    ahi : target scored apneas + hypopneas per hour of sleep (decoys come on top).
    lead_off : a 3-min stretch where the C4 electrode comes off and the oximeter probe slips for 90 s.
    plm : a series of periodic limb movements in N2.
    """
    rng = np.random.default_rng(seed)
    n_min = int(minutes)
    stages_min = _hypnogram_minutes(n_min, rng)
    extra = int(np.ceil(17 / site.record_s) * site.record_s)  # a tail that is not a whole epoch
    n_s = n_min * 60 + extra
    stage_s = np.array([s for s in stages_min for _ in range(60)] + ["W"] * extra)
    stages = np.array(stages_min).repeat(2)

    blocked = np.zeros(n_s, dtype=bool)
    artefacts = []
    if lead_off:
        n2 = np.flatnonzero(stage_s == "N2")
        a = int(n2[len(n2) // 3]) if len(n2) else n_s // 2
        blocked[a - 30: a + 210] = True
        artefacts = [("eeg_c4", float(a), float(a + 180)), ("spo2", float(a + 40), float(a + 130)),
                     ("pulse", float(a + 40), float(a + 130))]
    episodes = _plan_episodes(stage_s, blocked, ahi, rng)

    # --- per-second physiology curves ---
    flow_amp = np.exp(_slow_walk(n_s, 0.07, 40, rng))  # tidal volume wanders by ~7 %
    flow_amp[stage_s == "W"] *= np.exp(_slow_walk(n_s, 0.15, 6, rng))[stage_s == "W"]
    thor_amp, abdo_amp = flow_amp.copy(), 0.8 * flow_amp.copy()
    abdo_phase = np.full(n_s, 0.02)  # cycles of lag of the abdomen behind the chest
    limited = np.zeros(n_s)  # inspiratory flattening on the nasal pressure (flow limitation)
    spo2 = 96.0 + _slow_walk(n_s, 0.25, 120, rng)
    spo2[stage_s == "R"] -= 0.6
    hr = 62 + 6 * (stage_s == "W") + 2 * (stage_s == "R") + _slow_walk(n_s, 2.0, 30, rng)
    arousal_at: list[tuple[float, float]] = []
    rows, decoys = [], []

    def ramp_to(curve: np.ndarray, a: float, b: float, level, edge: float = 2.0) -> None:
        idx = np.arange(int(a), int(np.ceil(b)))
        w = np.clip(np.minimum(idx - a, b - idx) / edge + 0.5, 0, 1)
        curve[idx] = curve[idx] * (1 - w) + w * curve[idx] * level

    for ep in episodes:
        kind, a, b = ep["episode"], ep["start_s"], ep["end_s"]
        recovery = slice(int(b), int(b) + 10)
        if kind == "obstructive_apnea":
            ramp_to(flow_amp, a, b, rng.uniform(0.02, 0.06), edge=1.5)
            crescendo = np.linspace(0.8, 1.4, int(np.ceil(b)) - int(a))
            thor_amp[int(a): int(np.ceil(b))] *= crescendo
            abdo_amp[int(a): int(np.ceil(b))] *= crescendo
            abdo_phase[int(a): int(np.ceil(b))] = np.linspace(0.1, 0.45, int(np.ceil(b)) - int(a))  # paradox
            drop = int(np.clip(round((b - a) / 6 + rng.uniform(0, 2)), 4, 11))
            woke = rng.random() < 0.8
            rows.append(("apnea", "obstructive", a, b, drop, woke))
        elif kind == "central_apnea":
            for curve in (flow_amp, thor_amp, abdo_amp):
                ramp_to(curve, a, b, rng.uniform(0.01, 0.04), edge=1.5)
            drop = int(np.clip(round((b - a) / 8 + rng.uniform(0, 1.5)), 3, 6))
            woke = False
            rows.append(("apnea", "central", a, b, drop, woke))
        else:
            # A shallow decoy stays under 30 % on the nasal pressure too (pressure ~ flow squared: a 14 %
            # flow dip is a 26 % pressure dip) and has no flattening; the others are true >= 30 % reductions.
            depth = {"decoy_shallow": rng.uniform(0.08, 0.14), "decoy_short": rng.uniform(0.4, 0.5)}.get(
                kind, rng.uniform(0.35, 0.55))
            ramp_to(flow_amp, a, b, 1 - depth)
            if kind != "decoy_shallow":
                limited[int(a): int(np.ceil(b))] = rng.uniform(0.45, 0.65)
            obstructive = rng.random() < 0.75
            if obstructive:  # effort holds against the narrowed airway, partly out of phase
                abdo_phase[int(a): int(np.ceil(b))] = rng.uniform(0.12, 0.22)
            else:
                ramp_to(thor_amp, a, b, 1 - depth)
                ramp_to(abdo_amp, a, b, 1 - depth)
            drop = {"hypopnea_4": int(rng.choice([4, 5])), "hypopnea_3": 3, "decoy_2pct": 2}.get(kind, 0)
            woke = kind == "hypopnea_arousal"
            if kind.startswith("hypopnea"):
                rows.append(("hypopnea", "obstructive" if obstructive else "central", a, b, drop, woke))
            else:
                decoys.append((kind, "", a, b, drop, False))
        flow_amp[recovery] *= rng.uniform(1.3, 1.6)  # recovery breaths
        thor_amp[recovery] *= 1.3
        abdo_amp[recovery] *= 1.3
        hr[int(b): int(b) + 12] += rng.uniform(6, 12)
        if drop:
            fall, nadir, back = _desat_curve(spo2, ep, drop, rng)
            if drop >= 3:
                rows.append(("desaturation", f"{drop}%", fall, back, drop, False))
        if woke:
            arousal_at.append((b + rng.uniform(-1, 1.5), rng.uniform(4, 9)))

    # Spontaneous arousals in N2, away from breathing events.
    quiet = np.ones(n_s, dtype=bool)
    for ep in episodes:
        quiet[int(ep["start_s"]) - 30: int(ep["end_s"]) + 60] = False
    quiet &= ~blocked
    candidates = np.flatnonzero((stage_s == "N2") & quiet)
    for t in rng.choice(candidates, size=min(len(candidates), max(1, n_min // 20)), replace=False):
        if np.isin(stage_s[t - 15: t + 12], ("N2",)).all() and quiet[t - 15: t + 12].all():
            arousal_at.append((float(t), rng.uniform(4, 9)))
            quiet[t - 60: t + 60] = False
    for start, length in arousal_at:
        rows.append(("arousal", "", round(start, 1), round(start + length, 1), 0, True))
        hr[int(start): int(start + length) + 5] += 5

    limb = []
    if plm:
        n2 = np.flatnonzero((stage_s == "N2") & quiet)
        if len(n2) > 300:
            t = float(n2[len(n2) // 2])
            for _ in range(int(rng.integers(5, 9))):
                length = rng.uniform(0.8, 4.0)
                if stage_s[int(t)] != "N2" or not quiet[int(t)]:
                    break
                limb.append((t, length))
                rows.append(("limb_movement", "periodic", round(t, 1), round(t + length, 1), 0, False))
                t += rng.uniform(18, 35)

    # The oximeter reports whole percent; a few one-sample flickers of +-1.
    spo2_int = np.round(spo2)
    flick = rng.choice(n_s, size=n_s // 600, replace=False)
    spo2_int[flick] += rng.choice([-1, 1], size=len(flick))
    spo2_int = np.clip(spo2_int, 0, 100)
    pulse = np.round(hr)
    for role, a, b in artefacts:
        if role == "spo2":
            spo2_int[int(a): int(b)] = 0  # probe off: the oximeter writes 0
        if role == "pulse":
            pulse[int(a): int(b)] = 0

    signals = _render(site, n_s, stage_s, flow_amp, thor_amp, abdo_amp, abdo_phase, limited, hr, arousal_at, limb,
                      artefacts, rng)
    signals["spo2"], signals["pulse"] = spo2_int, pulse

    cols = ["kind", "subtype", "start_s", "end_s", "drop_pct", "arousal"]
    events = pd.DataFrame(rows, columns=cols).sort_values("start_s").reset_index(drop=True)
    # Scored only in sleep, as the AASM counts them (an arousal-only hypopnea needs its arousal).
    in_sleep = np.isin(stage_s[events["start_s"].astype(int)], SLEEP)
    events = events[in_sleep].reset_index(drop=True)
    start_seconds = site.start.hour * 3600 + site.start.minute * 60 + site.start.second
    truth = Truth(stages=stages, events=events, decoys=pd.DataFrame(decoys, columns=cols), artefacts=artefacts,
                  start_seconds=float(start_seconds), duration_s=float(n_s))
    return OtherNight(site=site, signals=signals, truth=truth, seed=seed)


def _render(site, n_s, stage_s, flow_amp, thor_amp, abdo_amp, abdo_phase, limited, hr, arousal_at, limb, artefacts,
            rng) -> dict[str, np.ndarray]:
    """Waveforms of every role at the site's own rates, from the per-second curves."""
    out: dict[str, np.ndarray] = {}
    # --- breathing, on a 100-Hz master grid ---
    n = int(n_s * RESP_HZ)
    rate = 0.26 + _slow_walk(n_s, 0.012, 60, rng) + 0.02 * (stage_s == "W")  # breaths per second
    phase = np.cumsum(_per_second_to(rate, n, RESP_HZ)) / RESP_HZ
    wave = np.sin(2 * np.pi * phase) + 0.12 * np.sin(4 * np.pi * phase - 0.6)  # inspiration > 0, asymmetric
    amp = _per_second_to(flow_amp, n, RESP_HZ, smooth_s=2)
    flow = amp * wave
    # Thermistor: a first-order lag of ~0.4 s on the oronasal flow, plus sensor noise.
    alpha = 1 / (0.4 * RESP_HZ)
    therm = lfilter([alpha], [1, alpha - 1], flow) + 0.02 * rng.standard_normal(n)
    # Nasal pressure ~ flow * |flow| (not linearised), inspiration flattened under flow limitation.
    lim = _per_second_to(limited, n, RESP_HZ, smooth_s=1)
    shaped = np.where((lim > 0) & (wave > 0), np.minimum(wave, np.where(lim > 0, lim, 9)), wave) * amp
    pressure = shaped * np.abs(shaped) + 0.01 * rng.standard_normal(n)
    thor = _per_second_to(thor_amp, n, RESP_HZ, smooth_s=2) * np.sin(2 * np.pi * phase)
    abdo = _per_second_to(abdo_amp, n, RESP_HZ, smooth_s=2) * np.sin(2 * np.pi * (phase - _per_second_to(abdo_phase, n, RESP_HZ)))
    drift = _per_second_to(_slow_walk(n_s, 0.3, 200, rng), n, RESP_HZ)
    master = {"flow": 180 * therm, "pressure": 0.8 * pressure, "thor": 400 * (thor + drift), "abdo": 350 * (abdo - drift)}
    scale = {"uV": 1.0, "mV": 1e-3, "cmH2O": 1.0, "mbar": 1.0}
    t_master = np.arange(n) / RESP_HZ
    for role, data in master.items():
        fs = site.rates[role]
        t = np.arange(int(n_s * fs)) / fs
        out[role] = np.interp(t, t_master, data) * scale.get(site.units[role], 1.0)

    # --- EEG, EOG, EMG, ECG at the electrophysiology rate ---
    fs = site.rates["eeg"]
    n = int(n_s * fs)
    gain = {  # RMS in uV per band by stage: delta, theta, alpha, sigma(spindles added apart), beta
        "W": (6, 6, 16, 2, 5), "N1": (10, 12, 4, 2, 2), "N2": (18, 10, 3, 3, 1.5), "N3": (48, 10, 2, 2, 1),
        "R": (8, 11, 4, 1, 2.5),
    }
    bands = ((0.5, 2.0), (4.0, 7.5), (8.0, 12.0), (12.0, 15.0), (16.0, 30.0))
    stage_gain = np.array([gain[s] for s in stage_s], dtype=float)  # [n_s, 5]
    arousal_s = np.zeros(n_s, dtype=bool)
    for start, length in arousal_at:
        arousal_s[int(start): int(start + length)] = True
    stage_gain[arousal_s, 2] = 22  # alpha
    stage_gain[arousal_s, 4] = 9  # beta
    stage_gain[arousal_s, 0] *= 0.4
    t = np.arange(n) / fs
    shared = sum(_band_noise(n, fs, lo, hi, rng) * _per_second_to(stage_gain[:, k], n, fs)
                 for k, (lo, hi) in enumerate(bands))
    shared += 4 * _pink(n, fs, rng)
    # Spindles (0.6-1.5 s, 12-14 Hz) and K-complexes in N2.
    for s in np.flatnonzero(stage_s == "N2")[::7]:
        s0 = s + rng.uniform(0, 6)
        length = rng.uniform(0.6, 1.5)
        idx = np.arange(int(s0 * fs), int((s0 + length) * fs))
        idx = idx[idx < n]
        shared[idx] += 30 * np.hanning(len(idx)) * np.sin(2 * np.pi * rng.uniform(12, 14) * t[idx])
        if rng.random() < 0.35:
            k = np.arange(int((s0 + 3) * fs), int((s0 + 4) * fs))
            k = k[k < n]
            shared[k] += -90 * np.sin(np.pi * np.linspace(0, 2, len(k))) * np.hanning(len(k))
    for role, lead in (("eeg_c3", 0.9), ("eeg_c4", 0.85)):
        out[role] = lead * shared + 5 * _pink(n, fs, rng)
    for role, a, b in artefacts:
        if role == "eeg_c4":  # electrode off: mains hum and drifting offset, no EEG
            idx = slice(int(a * fs), int(b * fs))
            out["eeg_c4"][idx] = 400 * np.sin(2 * np.pi * 50 * t[idx]) + 300 * np.cumsum(
                rng.standard_normal(idx.stop - idx.start)) / np.sqrt(fs * 60)
    # EOG: frontal EEG leak, blinks and saccades awake, slow rolling in N1, rapid movements in REM.
    eye = np.zeros(n)
    for s in range(n_s):
        st = stage_s[s]
        if st == "W" and rng.random() < 0.25:
            i = int((s + rng.random()) * fs)
            eye[i: i + int(0.3 * fs)] += 150 * np.hanning(len(eye[i: i + int(0.3 * fs)]))
        elif st == "R" and rng.random() < 0.3:
            i = int((s + rng.random()) * fs)
            m = min(int(0.25 * fs), n - i)
            eye[i: i + m] += rng.choice([-1, 1]) * 120 * np.sin(np.pi * np.arange(m) / m) ** 0.5
    slow = _band_noise(n, fs, 0.2, 0.6, rng) * _per_second_to(np.where(stage_s == "N1", 60.0, 3.0), n, fs)
    out["eog_l"] = 0.3 * shared + eye + slow + 5 * _pink(n, fs, rng)
    out["eog_r"] = 0.3 * shared - eye - slow + 5 * _pink(n, fs, rng)
    emg_level = np.array([{"W": 18, "N1": 10, "N2": 7, "N3": 6, "R": 2}[s] for s in stage_s], dtype=float)
    emg_level[arousal_s] = 25
    out["chin"] = _band_noise(n, fs, 15, min(100, 0.45 * fs), rng) * _per_second_to(emg_level, n, fs)
    leg_level = np.full(n_s, 3.0)
    leg = _band_noise(n, fs, 15, min(100, 0.45 * fs), rng) * _per_second_to(leg_level, n, fs)
    for start, length in limb:
        idx = np.arange(int(start * fs), int((start + length) * fs))
        leg[idx] += 45 * _band_noise(len(idx), fs, 20, min(100, 0.45 * fs), rng) * np.hanning(len(idx)) ** 0.3
    out["leg"] = leg
    # ECG: Gaussian P-QRS-T at beat times from the heart rate.
    beats = np.cumsum(60 / np.clip(np.interp(np.arange(0, n_s, 0.5), np.arange(n_s), hr), 35, 180)
                      + rng.normal(0, 0.02, n_s * 2))
    beats = beats[beats < n_s - 1]
    ecg = np.zeros(n)
    template_t = np.arange(-0.3, 0.5, 1 / fs)
    template = (0.12 * np.exp(-((template_t + 0.18) / 0.025) ** 2) + 1.0 * np.exp(-(template_t / 0.012) ** 2)
                - 0.15 * np.exp(-((template_t - 0.03) / 0.01) ** 2) + 0.3 * np.exp(-((template_t - 0.28) / 0.05) ** 2))
    for b in beats:
        i = int(b * fs) + int(template_t[0] * fs)
        lo, hi = max(i, 0), min(i + len(template), n)
        ecg[lo:hi] += template[lo - i: hi - i]
    out["ecg"] = (900 * ecg + 15 * rng.standard_normal(n)) * scale.get(site.units["ecg"], 1.0)
    # EOG/EMG/ECG/leg share the EEG rate only in how they were rendered: resample to the site's rates.
    for role, group in (("eog_l", "eog"), ("eog_r", "eog"), ("chin", "chin"), ("ecg", "ecg"), ("leg", "leg")):
        if site.rates[group] != fs:
            t_out = np.arange(int(n_s * site.rates[group])) / site.rates[group]
            out[role] = np.interp(t_out, t, out[role])
    return out


# ---- files -----------------------------------------------------------------------------------------

def _physical_range(data: np.ndarray, unit: str) -> tuple[float, float]:
    if unit == "%":
        return 0.0, 100.0
    if unit == "bpm":
        return 0.0, 250.0
    top = float(np.max(np.abs(data))) * 1.1 + 1e-3
    return -top, top


def _annotations(night: OtherNight) -> list[EdfAnnotation]:
    site, truth = night.site, night.truth
    stage_of_second = truth.stages.repeat(EPOCH_S)
    notes = []
    step = site.stage_epoch_s
    for onset in range(0, len(stage_of_second) - step + 1, step):
        notes.append(EdfAnnotation(float(onset), float(step), site.stage_labels[str(stage_of_second[onset])]))
    for row in truth.events.itertuples():
        key = f"apnea/{row.subtype}" if row.kind == "apnea" else row.kind
        notes.append(EdfAnnotation(float(row.start_s), round(float(row.end_s - row.start_s), 1), site.event_labels[key]))
    return sorted(notes, key=lambda a: a.onset)


def write_other_night(night: OtherNight, path) -> dict[str, Path]:
    """Write the night as the site's files: ``{"recording": path}`` and, for plain EDF, ``"scoring"``
    (an annotation-only EDF+ beside it, ``<stem>-scoring.edf``).

    Physical ranges are the site's (SpO2 0-100 %, pulse 0-250 bpm) or 1.1x the peak; samples are 16 bit.
    """
    site, path = night.site, Path(path)
    signals = []
    groups = {"eeg_c3": "eeg", "eeg_c4": "eeg", "eog_l": "eog", "eog_r": "eog"}
    reference_written = set()
    for role, label in site.labels.items():
        group = groups.get(role, role)
        fs, unit, data = site.rates[group], site.units[group], night.signals[role]
        if role in site.monopolar:  # "C3-M2" written as electrode "C3" against a common reference, and "M2"
            active, reference = label.split("-")
            ref_wave = 20 * _pink(len(data), fs, np.random.default_rng(zlib.crc32(reference.encode())))
            for name, wave in ((active, data + ref_wave), (reference, ref_wave)):
                if name in reference_written:
                    continue
                reference_written.add(name)
                signals.append(EdfSignal(wave, fs, label=name, physical_dimension=unit,
                                         physical_range=_physical_range(wave, unit)))
            continue
        signals.append(EdfSignal(data, fs, label=label, physical_dimension=unit, physical_range=_physical_range(data, unit),
                                 transducer_type="Thermistor" if role == "flow" else ""))
    files = {"recording": path}
    notes = _annotations(night)
    edf = Edf(signals, starttime=site.start, data_record_duration=site.record_s, annotations=notes if site.plus else None)
    edf.write(path)
    if not site.plus:
        scoring = path.with_name(path.stem + "-scoring.edf")
        Edf([], starttime=site.start, annotations=notes).write(scoring)
        files["scoring"] = scoring
    return files
