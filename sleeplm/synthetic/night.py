"""`simulate_night`: a whole synthetic PSG night in memory, with its ground truth."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd
from scipy import signal

from sleeplm.errors import SimulationError
from sleeplm.io.recording import EPOCH_SEC
from sleeplm.terms import BRADY_BPM, EVENT_GROUPS, TACHY_BPM, runs
from sleeplm.synthetic.hypnogram import simulate_hypnogram
from sleeplm.synthetic.montages import MONTAGES, POSITION_ENCODINGS, POSITION_MAP_NAMES, ROLL_ANGLE_DEG
from sleeplm.synthetic.physiology import EEG_RANGE_UV, RESP_SFREQ, SLOW_SFREQ, NightPhysiology
from sleeplm.synthetic.scenario import SEVERITIES, plan_night

__all__ = ["SIMULATOR_VERSION", "SimulationError", "Truth", "SyntheticNight", "simulate_night", "render_source"]

logger = logging.getLogger(__name__)

# Raised whenever the same arguments start giving a different night (cached demo nights follow it).
SIMULATOR_VERSION = 3

_EEG_DERIVATIONS = ("C3-M2", "C4-M1", "Fpz-Cz", "Pz-Oz", "Fz-Cz", "Cz-Oz")
_STEP_SOURCES = ("Position", "Light", "Marker")  # codes: resampled by holding, never interpolated
_AMPLIFIER_SOURCES = _EEG_DERIVATIONS + ("C3", "C4", "M1", "M2", "E1", "E2", "E1-M2", "E2-M1", "EOG horizontal")
_ANNOTATION_TEXT = {
    ("apnea", "obstructive"): "Obstructive Apnea", ("apnea", "central"): "Central Apnea",
    ("apnea", "mixed"): "Mixed Apnea", ("hypopnea", "obstructive"): "Hypopnea",
    ("desaturation", "associated"): "Oxygen Desaturation", ("desaturation", "isolated"): "Oxygen Desaturation",
    ("arousal", "respiratory"): "Arousal", ("arousal", "spontaneous"): "Arousal", ("arousal", "movement"): "Arousal",
    ("tachycardia", "sinus"): "Tachycardia", ("bradycardia", "sinus"): "Bradycardia",
}


@dataclass
class Truth:
    """What a simulated night really contains.

    Attributes
    ----------
    hypnogram : stage per 30-s epoch (``"W","N1","N2","N3","R"``).
    events : DataFrame, one row per event, sorted by ``start_s``; columns

        - ``kind``: apnea, hypopnea, desaturation, arousal, tachycardia, bradycardia, position_change,
          artefact;
        - ``subtype``: apnea obstructive/central/mixed; hypopnea obstructive; desaturation
          associated (caused by a scored respiratory event) or isolated; arousal respiratory,
          spontaneous or movement (turning over in sleep); tachycardia/bradycardia sinus;
          position_change ``"Supine->Left"``; artefact flat, electrode_pop, clipping, movement;
        - ``start_s``, ``end_s``: seconds from recording start. Respiratory events: the airflow
          reduction. Desaturations: onset of the SpO2 fall to its nadir. Tachycardia/bradycardia:
          heart rate above 90 / below 40 bpm. Position changes are instants (``start_s == end_s``);
        - ``channel``: canonical channel(s) an artefact affects, comma-separated ("" otherwise);
        - ``stage``, ``position``: at the event start;
        - ``flow_drop_pct``: airflow amplitude reduction of a respiratory event (%);
        - ``desat_pct``: SpO2 fall (percentage points) of a desaturation or caused by a
          respiratory event (hypopneas scored on arousal only dip < 2);
        - ``nadir_s``: time of the SpO2 nadir;
        - ``criterion``: for hypopneas, what makes them score under AASM rule 1A:
          "desaturation" (>= 3 %), "arousal" or "desaturation+arousal".
    ahi : (apneas + hypopneas) per hour of total sleep time (NaN when the night holds no sleep).
    start_clock : recording start, ``"HH:MM:SS"``.
    montage, severity, seed : how the night was simulated.
    position : SleepLM position code per epoch (at the epoch start).
    position_map : the `sleeplm.io.channels.POSITION_MAPS` name that decodes this montage's position
        channel (None when the montage has none).
    spo2_baseline : SpO2 (%) outside desaturations.
    """

    hypnogram: np.ndarray
    events: pd.DataFrame
    ahi: float
    start_clock: str
    montage: str
    severity: str
    seed: int
    position: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    position_map: str | None = None
    spo2_baseline: float = float("nan")

    @property
    def tst_h(self) -> float:
        """Total sleep time in hours."""
        return float((self.hypnogram != "W").sum()) * EPOCH_SEC / 3600

    def respiratory_events(self) -> pd.DataFrame:
        """Apneas and hypopneas (the events the AHI counts).

        Examples
        --------
        >>> from sleeplm.synthetic import load_truth
        >>> events = load_truth(tiny_night_path()).respiratory_events()
        >>> events["kind"].value_counts().to_dict()
        {'hypopnea': 5, 'apnea': 3}
        """
        return self.events[self.events["kind"].isin(EVENT_GROUPS["respiratory"])]


@dataclass
class SyntheticNight:
    """A simulated night in memory.

    Attributes
    ----------
    signals : label -> ``(data, sfreq_hz, unit)`` in physical units, in file channel order.
    labels : channel labels of the montage, in file order.
    start_clock : ``"HH:MM:SS"``.
    truth : the ground truth.
    annotations : ``(onset_s, duration_s, text)`` to write as EDF+ annotations.
    physical_ranges : label -> ``(min, max)`` physical range to declare in the file: the
        amplifier range for EEG/EOG, the data range with a 2 % margin otherwise.
    """

    signals: dict[str, tuple[np.ndarray, float, str]]
    labels: list[str]
    start_clock: str
    truth: Truth
    annotations: list[tuple[float, float, str]] = field(default_factory=list)
    physical_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.truth.hypnogram.size * EPOCH_SEC


def _check_arguments(duration_h, seed, severity, montage, sfreq, start_clock) -> int:
    """Number of 30-s epochs of the night, after checking every argument."""
    if severity not in SEVERITIES:
        raise SimulationError(f"unknown severity {severity!r}; use one of {list(SEVERITIES)}.")
    if montage not in MONTAGES:
        raise SimulationError(f"unknown montage {montage!r}; use one of {list(MONTAGES)}.")
    if not isinstance(duration_h, (int, float)) or not np.isfinite(duration_h) or duration_h * 3600 < EPOCH_SEC:
        raise SimulationError(f"duration_h={duration_h!r} is shorter than one 30-s epoch; ask for at least 0.01 h.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed={seed!r}: use a whole number >= 0.")
    if not isinstance(sfreq, (int, float)) or float(sfreq) != int(sfreq) or not 64 <= int(sfreq) <= 1024:
        raise SimulationError(f"sfreq={sfreq!r} Hz: use a whole number of Hz between 64 and 1024 (e.g. 128 or 256).")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", str(start_clock)):
        raise SimulationError(f"start_clock={start_clock!r}: write the clock time as 'HH:MM:SS', e.g. '22:47:30'.")
    return max(1, int(round(duration_h * 3600 / EPOCH_SEC)))


def render_source(physiology: NightPhysiology, source: str) -> tuple[np.ndarray, float]:
    """One simulated signal at its native rate: ``(data in physical units, sfreq_hz)``.

    Sources: EEG derivations (``"C3-M2"``, ``"C4-M1"``, ``"Fpz-Cz"``, ``"Pz-Oz"``, ``"Fz-Cz"``,
    ``"Cz-Oz"``) and electrodes (``"C3"``, ``"C4"``, ``"M1"``, ``"M2"``), EOG (``"E1-M2"``,
    ``"E2-M1"``, ``"E1"``, ``"E2"``, ``"EOG horizontal"``), chin EMG (``"Chin1-Chin2"``, ``"Chin1"``,
    ``"Chin2"``, ``"EMG RMS"``), ``"ECG"``, breathing (``"Airflow"``, ``"Pressure"``,
    ``"Cannula flow"``, ``"Thorax"``, ``"Abdomen"``, ``"Snore"``, ``"Snore dB"``), ``"SpO2"``,
    ``"HR"``, ``"Position"`` (SleepLM codes), ``"Light"``, ``"Temp"``, ``"Marker"``; all in uV
    unless the name says otherwise (SpO2 %, HR bpm, Pressure cmH2O, Temp degC).

    Examples
    --------
    >>> import numpy as np
    >>> from sleeplm.synthetic.hypnogram import simulate_hypnogram
    >>> from sleeplm.synthetic.physiology import NightPhysiology
    >>> from sleeplm.synthetic.scenario import plan_night
    >>> rng = np.random.default_rng(0)
    >>> scenario = plan_night(simulate_hypnogram(20, rng), rng, "mild")    # 10 minutes
    >>> spo2, sfreq = render_source(NightPhysiology(scenario, seed=0, sfreq=128), "SpO2")
    >>> sfreq, len(spo2) == 20 * 30 * sfreq, bool(85 < spo2.mean() < 100)
    (4.0, True, True)
    """
    p, fs = physiology, physiology.sfreq
    electrode = {"C3": ("C3-M2", "M2"), "C4": ("C4-M1", "M1"), "E1": ("E1-M2", "M2"), "E2": ("E2-M1", "M1")}
    if source in _EEG_DERIVATIONS:
        return p.eeg(source), fs
    if source in electrode:  # referential electrode = derivation + its reference
        derivation, reference = electrode[source]
        active = p.eeg(derivation) if source.startswith("C") else p.eog(derivation)
        return active + p.mastoid(reference), fs
    if source in ("M1", "M2"):
        return p.mastoid(source), fs
    if source in ("E1-M2", "E2-M1"):
        return p.eog(source), fs
    if source == "EOG horizontal":
        return p.eog("E1-M2") - p.eog("E2-M1"), fs
    if source == "Chin1-Chin2":
        return p.chin_emg(), fs
    if source in ("Chin1", "Chin2"):
        return (0.5 if source == "Chin1" else -0.5) * p.chin_emg() + p.mastoid("chin-common"), fs
    if source == "EMG RMS":
        return p.chin_emg_rms(), 1.0
    if source == "ECG":
        return p.ecg(), fs
    breathing = {"Airflow": p.airflow_thermistor, "Pressure": p.nasal_pressure,
                 "Thorax": lambda: p.effort("Thorax"), "Abdomen": lambda: p.effort("Abdomen")}
    if source in breathing:
        return breathing[source](), float(RESP_SFREQ)
    if source == "Cannula flow":  # square-root linearised nasal pressure; the montage's only airflow
        pressure = p.nasal_pressure()
        flow = np.sign(pressure) * np.sqrt(np.abs(pressure))
        return p.apply_artefacts(flow, "AF", np.random.default_rng([p.seed, 11]), fs=RESP_SFREQ), float(RESP_SFREQ)
    if source == "Snore":
        return p.snore(min(fs, 128.0)), min(fs, 128.0)
    if source == "Snore dB":  # sound level over 0.1-s windows
        sound = p.snore(100.0)
        rms = np.sqrt((sound.reshape(-1, 10) ** 2).mean(axis=1))
        return 20 * np.log10(rms + 1.0) + 20.0, 10.0
    if source == "SpO2":
        return p.spo2(), float(SLOW_SFREQ)
    if source == "HR":
        return p.pulse_rate(), float(SLOW_SFREQ)
    if source == "Position":
        return p.position(), 1.0
    if source == "Temp":
        return p.rectal_temperature(), 1.0
    if source in ("Light", "Marker"):  # lights off all night; no marker pressed
        return np.zeros(p.n_s), 1.0
    raise SimulationError(f"no simulated source {source!r}")


def _resample(x: np.ndarray, fs_from: float, fs_to: float, n_s: int, step: bool) -> np.ndarray:
    """`x` at `fs_to` Hz, exactly ``n_s * fs_to`` samples; codes are held, waveforms anti-alias filtered."""
    n = int(round(n_s * fs_to))
    if fs_from == fs_to:
        return x[:n]
    if step:
        return x[np.minimum((np.arange(n) * fs_from / fs_to).astype(int), x.size - 1)]
    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    y = signal.resample_poly(x, ratio.numerator, ratio.denominator, padtype="line")
    return np.pad(y[:n], (0, max(n - y.size, 0)), mode="edge")


def _encode_position(codes: np.ndarray, montage: str, rng: np.random.Generator) -> np.ndarray:
    encoding = POSITION_ENCODINGS[montage]
    if encoding == "angle":  # roll sensor: degrees with a little sensor noise
        angle = np.vectorize(ROLL_ANGLE_DEG.get)(codes.astype(int)) + rng.normal(0, 3.0, codes.size)
        return (angle + 180.0) % 360.0 - 180.0
    lookup = np.array([encoding[code] for code in range(4)], dtype=float)
    return lookup[codes.astype(int)]


def _annotations(truth: Truth) -> list[tuple[float, float, str]]:
    """Reference scoring as EDF+ annotations: stage runs, then scored events (artefacts are not scored)."""
    hyp = truth.hypnogram
    starts = np.flatnonzero(np.r_[True, hyp[1:] != hyp[:-1]])
    ends = np.r_[starts[1:], hyp.size]
    notes = [(float(s * EPOCH_SEC), float((e - s) * EPOCH_SEC), f"Sleep stage {hyp[s]}") for s, e in zip(starts, ends)]
    for row in truth.events.itertuples():
        if row.kind == "position_change":
            notes.append((row.start_s, 0.0, f"Body position: {row.subtype.split('->')[-1]}"))
        elif (row.kind, row.subtype) in _ANNOTATION_TEXT:
            notes.append((row.start_s, round(row.end_s - row.start_s, 2), _ANNOTATION_TEXT[(row.kind, row.subtype)]))
    return notes


def simulate_night(
    duration_h: float = 8.0,
    seed: int = 0,
    severity: str = "moderate",
    montage: str = "aasm",
    sfreq: int = 256,
    artefacts: bool = True,
    annotations: bool = False,
    *,
    start_clock: str = "22:47:30",
    tachycardia: bool = True,
    bradycardia: bool = False,
    extra_annotations=(),
) -> SyntheticNight:
    """Simulate a PSG night with known events.

    Parameters
    ----------
    duration_h : length of the recording in hours (rounded to whole 30-s epochs).
    seed : random seed; the same arguments give the same night, sample for sample.
    severity : "none" (AHI < 5), "mild" (5-15), "moderate" (15-30) or "severe" (>= 30): sets the
        respiratory event rate and sleep fragmentation. The truth AHI lies inside the band once the
        night holds about half an hour of sleep (shorter nights have too few events to place).
    montage : channel layout, one of `sleeplm.synthetic.MONTAGES` ("aasm", "monopolar", "shhs",
        "mesa", "sleep-edf", "nox"); see `sleeplm.synthetic.montages` for labels and position codes.
    sfreq : rate (Hz) of EEG/EOG/EMG/ECG before the montage caps it at its system's rate.
    artefacts : add flat, electrode-pop, clipped and movement artefacts (truth kind "artefact").
    annotations : attach the reference scoring (stages and events) as EDF+ annotations.
    start_clock : recording start, ``"HH:MM:SS"``.
    tachycardia : add one sinus tachycardia episode (> 90 bpm) during sleep (nights >= 1 h).
    bradycardia : add one sinus bradycardia episode (< 40 bpm) during sleep (nights >= 1 h).
    extra_annotations : ``(onset_s, duration_s, text)`` to plant in the file's annotations
        whatever `annotations` says (e.g. to test prompt injection through annotation text).

    Returns
    -------
    SyntheticNight

    Examples
    --------
    >>> night = simulate_night(duration_h=0.5, seed=1, sfreq=128)
    >>> night.labels[:3], night.truth.start_clock
    (['C3-M2', 'C4-M1', 'E1-M2'], '22:47:30')
    """
    n_epochs = _check_arguments(duration_h, seed, severity, montage, sfreq, start_clock)
    rng = np.random.default_rng(seed)
    hypnogram = simulate_hypnogram(n_epochs, rng, SEVERITIES[severity]["fragmentation"])
    scenario = plan_night(hypnogram, rng, severity, artefacts=artefacts, tachycardia=tachycardia,
                          bradycardia=bradycardia)
    physiology = NightPhysiology(scenario, seed, sfreq)
    _measure_heart_rate_episodes(scenario.events, physiology)

    n_s = n_epochs * EPOCH_SEC
    signals, ranges = {}, {}
    for spec in MONTAGES[montage]:
        data, native = render_source(physiology, spec.source)
        rate = float(min(int(sfreq), spec.max_rate))
        data = _resample(data, native, rate, n_s, step=spec.source in _STEP_SOURCES) * spec.gain
        if spec.source == "Position":
            data = _encode_position(data, montage, np.random.default_rng([seed, 7]))
        ranges[spec.label] = _physical_range(data, spec.source in _AMPLIFIER_SOURCES)
        signals[spec.label] = (np.clip(data, *ranges[spec.label]).astype(np.float32), rate, spec.unit)

    events = _keep_rendered_artefacts(scenario.events, physiology.artefact_channels)
    resp = events["kind"].isin(["apnea", "hypopnea"]).sum()
    tst_h = float((hypnogram != "W").sum()) * EPOCH_SEC / 3600
    truth = Truth(
        hypnogram=hypnogram, events=events, ahi=float(resp / tst_h) if tst_h else float("nan"),
        start_clock=start_clock, montage=montage, severity=severity, seed=int(seed),
        position=scenario.position_s[:: EPOCH_SEC].astype(int), position_map=POSITION_MAP_NAMES[montage],
        spo2_baseline=round(scenario.spo2_baseline, 2),
    )
    notes = _annotations(truth) if annotations else []
    notes = sorted(notes + [(float(o), float(d), str(t)) for o, d, t in extra_annotations], key=lambda note: note[0])
    logger.info("simulated %.2f h %s night (%s montage): %d respiratory events, AHI %.1f",
                n_s / 3600, severity, montage, resp, truth.ahi)
    return SyntheticNight(signals=signals, labels=[spec.label for spec in MONTAGES[montage]],
                          start_clock=start_clock, truth=truth, annotations=notes, physical_ranges=ranges)


def _physical_range(data: np.ndarray, amplifier: bool) -> tuple[float, float]:
    """Declared physical range: the EEG amplifier's, else the data's with a 2 % margin (never empty)."""
    if amplifier:
        return -EEG_RANGE_UV, EEG_RANGE_UV
    low, high = float(data.min()), float(data.max())
    margin = 0.02 * (high - low) if high > low else 1.0
    return round(low - margin, 3), round(high + margin, 3)


def _measure_heart_rate_episodes(events: pd.DataFrame, physiology: NightPhysiology) -> None:
    """Set each tachycardia/bradycardia row to the span where the simulated heart rate really is > 90 / < 40 bpm."""
    for index in events.index[events["kind"].isin(["tachycardia", "bradycardia"])]:
        hr = physiology.heart_rate
        beyond = hr > TACHY_BPM if events.at[index, "kind"] == "tachycardia" else hr < BRADY_BPM
        centre = int((events.at[index, "start_s"] + events.at[index, "end_s"]) / 2 * SLOW_SFREQ)
        first, last = next((a, b) for a, b in runs(beyond) if a <= centre < b)
        events.loc[index, ["start_s", "end_s"]] = round(first / SLOW_SFREQ, 2), round(last / SLOW_SFREQ, 2)


def _keep_rendered_artefacts(events: pd.DataFrame, rendered: set[str]) -> pd.DataFrame:
    """`events` with artefact rows limited to the channels this montage carries (rows left with none dropped)."""
    is_artefact = events["kind"] == "artefact"
    channels = events["channel"].where(~is_artefact, events["channel"].map(
        lambda text: ",".join(c for c in text.split(",") if c in rendered)))
    return events.assign(channel=channels)[~is_artefact | (channels != "")].reset_index(drop=True)
