"""A hand-built night with exactly known content, for unit tests of the measurements.

Unlike the full simulator (`sleeplm.synthetic`), every feature here is placed by the test:
stages per epoch, breathing pauses, desaturations, heart rate, positions. Signals are in
physical units at the loader's analysis rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sleeplm.io.recording import CANONICAL_CHANNELS, EPOCH_SAMPLES, EPOCH_SEC, ChannelInfo, Recording, ReferenceScoring, Signal

BREATH_HZ = 0.25


def _stage_eeg(stages, fs, rng):
    n = len(stages) * EPOCH_SEC * fs
    t = np.arange(n) / fs
    eeg = rng.normal(0, 4, n)
    per_epoch = EPOCH_SEC * fs
    for i, stage in enumerate(stages):
        s = slice(i * per_epoch, (i + 1) * per_epoch)
        if stage == "W":
            eeg[s] += 25 * np.sin(2 * np.pi * 10 * t[s]) + rng.normal(0, 6, per_epoch)
        elif stage == "N3":
            eeg[s] += 80 * np.sin(2 * np.pi * 1.0 * t[s])
        else:
            eeg[s] += 15 * np.sin(2 * np.pi * 6 * t[s])
            if stage == "N2":  # one 1-s spindle in the middle of each N2 epoch, and a K-complex at 7 s
                mid = i * per_epoch + per_epoch // 2
                eeg[mid : mid + fs] += 40 * np.sin(2 * np.pi * 13 * t[mid : mid + fs]) * np.hanning(fs)
                k = i * per_epoch + 7 * fs
                eeg[k : k + fs] -= 60 * np.sin(2 * np.pi * np.arange(fs) / fs)  # trough, then peak: 120 uV
    return eeg


def make_night(stages, events=(), hr_bpm=None, positions=None, seed=0, start_seconds=23 * 3600.0,
               drop=("Pressure",), scored=True) -> Recording:
    """A Recording with the given per-epoch `stages` and breathing `events`.

    Parameters
    ----------
    stages : sequence of "W", "N1", "N2", "N3", "R" per 30-s epoch.
    events : (kind, subtype, start_s, duration_s); kind "apnea" (subtype obstructive/central)
        or "hypopnea". Each is followed by a 4 % SpO2 dip (nadir 15 s after its end).
    hr_bpm : heart rate per second (default 60 bpm all night).
    positions : position code per second (default supine, code 2).
    drop : channels to leave out; "Pressure" is left out by default (airflow = AF thermistor).
    scored : attach `stages` as the file's reference scoring.
    """
    rng = np.random.default_rng(seed)
    n_epochs = len(stages)
    seconds = n_epochs * EPOCH_SEC
    signals: dict[str, Signal] = {}

    fs = 128
    signals["EEG_C3_A2"] = Signal(_stage_eeg(stages, fs, rng), fs, "uV", "C3-M2")
    signals["EEG_C4_A1"] = Signal(_stage_eeg(stages, fs, rng), fs, "uV", "C4-M1")
    eye = rng.normal(0, 3, seconds * fs)
    rem = np.repeat(np.asarray(stages) == "R", EPOCH_SEC * fs)
    saccades = np.cumsum(rng.choice([-1, 0, 0, 0, 1], size=seconds * fs) * 8.0 * rem)
    saccades -= np.convolve(saccades, np.ones(fs) / fs, mode="same")
    signals["EOG_Left"] = Signal(eye + saccades, fs, "uV", "E1-M2")
    signals["EOG_Right"] = Signal(rng.normal(0, 3, seconds * fs) - saccades, fs, "uV", "E2-M2")
    tone = np.repeat(np.where(rem, 1.0, 5.0)[:: EPOCH_SEC * fs], EPOCH_SEC * fs)
    signals["EMG_Chin"] = Signal(rng.normal(0, 1, seconds * fs) * tone, fs, "uV", "Chin")

    hr = np.full(seconds, 60.0) if hr_bpm is None else np.asarray(hr_bpm, dtype=float)
    ecg_fs = 256
    # Beat i at the time the previous beat plus the RR of that moment.
    times = [0.5]
    while times[-1] < seconds - 1.5:
        times.append(times[-1] + 60.0 / hr[int(times[-1])])
    ecg = rng.normal(0, 20, seconds * ecg_fs)
    kernel_t = np.arange(-10, 11) / ecg_fs
    qrs = 1000 * np.exp(-(kernel_t**2) / (2 * 0.008**2))
    for beat in times:
        i = int(beat * ecg_fs)
        ecg[i - 10 : i + 11] += qrs
    signals["ECG"] = Signal(ecg, ecg_fs, "uV", "ECG")

    resp_fs = 32
    t = np.arange(seconds * resp_fs) / resp_fs
    flow_gain = np.ones_like(t)
    effort_gain = np.ones_like(t)
    spo2 = np.full(seconds, 96.0)
    for kind, subtype, start, duration in events:
        s = slice(int(start * resp_fs), int((start + duration) * resp_fs))
        flow_gain[s] = 0.03 if kind == "apnea" else 0.45
        if subtype == "central":
            effort_gain[s] = 0.03
        end = int(start + duration)
        dip = 4.0 * np.exp(-(((np.arange(seconds) - (end + 15)) / 8.0) ** 2))
        spo2 -= dip
    breath = np.sin(2 * np.pi * BREATH_HZ * t)
    signals["AF"] = Signal(breath * flow_gain + rng.normal(0, 0.02, t.size), resp_fs, "uV", "Thermistor")
    signals["Pressure"] = Signal(breath * flow_gain + rng.normal(0, 0.02, t.size), resp_fs, "cmH2O", "Nasal pressure")
    signals["THX"] = Signal(breath * effort_gain + rng.normal(0, 0.02, t.size), resp_fs, "uV", "Thorax")
    signals["ABD"] = Signal(0.8 * breath * effort_gain + rng.normal(0, 0.02, t.size), resp_fs, "uV", "Abdomen")
    signals["SpO2"] = Signal(np.round(spo2, 1), 1.0, "%", "SpO2")
    pos = np.full(seconds, 2.0) if positions is None else np.asarray(positions, dtype=float)
    signals["POS"] = Signal(pos, 1.0, "code", "Position")
    for name in drop:
        signals.pop(name, None)

    present = np.array([name in signals for name in CANONICAL_CHANNELS])
    return Recording(
        epochs=np.zeros((n_epochs, len(CANONICAL_CHANNELS), EPOCH_SAMPLES), dtype=np.float32),
        channel_present=present,
        channels=[ChannelInfo(canonical=name, present=bool(p)) for name, p in zip(CANONICAL_CHANNELS, present)],
        signals=signals,
        start_seconds=start_seconds,
        normalization="night_robust",
        position_map="sleeplm",
        reference=ReferenceScoring(np.asarray(stages, dtype=object), pd.DataFrame(columns=["onset_s", "duration_s", "kind", "subtype", "label"])) if scored else None,
        source_format="EDF+",
    )
