"""Waveforms of a planned night (`Scenario`) in physical units, rendered on demand per source.

Each source ("C3-M2", "E1-M2", "ECG", "Airflow", "SpO2", ...) is drawn from its own seeded
random stream, so a montage that needs only some sources renders the same waveforms as one
that needs all of them. Everything is vectorised over samples; loops run over events only.

Models (amplitudes are typical adult scalp/belt/oximeter values):

- EEG: band-limited noise (delta 0.5-4, theta 4-7, alpha 8-12, beta 16-25 Hz) with per-stage
  amplitudes, spindles (12-14 Hz) and K-complexes in N2, sawtooth waves in REM, alpha/beta
  bursts with less delta during arousals. Derivations share a common source plus their own part.
- EOG: AC-coupled eye-position steps (saccades; bursts of rapid eye movements in REM), blinks in
  wake, slow rolling movements in N1; E1-M2 and E2-M1 see eye movements with opposite polarity
  and the frontal EEG (K-complexes, delta) with the same polarity.
- chin EMG: high-band noise, high in wake, lower in NREM, atonia with twitches in REM, bursts at arousals.
- ECG: PQRST template at beat times from an integrated heart rate with respiratory sinus
  arrhythmia, slow oscillations, dips during apneas, surges at event ends/arousals, and
  the planned tachycardia/bradycardia episodes.
- breathing: a phase oscillator (rate per stage) whose amplitude drifts over the night; oronasal
  thermistor, nasal pressure (flattened in obstructive hypopneas), thoracic and abdominal belts
  (paradoxical in obstructive events, absent in central ones), snore bursts on inspiration.
  Respiratory events are rounded: the flow fades over 2-5 s into the reduction and climbs back
  over 2-5 s after it (outside the truth's start/end), and wanders inside it.
- SpO2: a baseline with desaturation dips (half-cosine fall to the planned nadir, 8-12 s recovery).
"""

from __future__ import annotations

import zlib
from functools import cached_property

import numpy as np
from scipy import ndimage, signal

from sleeplm.io.recording import EPOCH_SEC, STAGES
from sleeplm.synthetic.scenario import Scenario

__all__ = ["EEG_RANGE_UV", "RESP_SFREQ", "SLOW_SFREQ", "NightPhysiology"]

EEG_RANGE_UV = 500.0  # amplifier range of EEG/EOG channels; the clipped artefact saturates here
RESP_SFREQ = 32  # internal rate of breathing signals (Hz)
SLOW_SFREQ = 4  # internal rate of SpO2 and heart rate (Hz)

# Standard deviation (uV) per band and stage: delta, theta, alpha, beta.
_BANDS_HZ = ((0.5, 4.0), (4.0, 7.0), (8.0, 12.0), (16.0, 25.0))
_EEG_STAGE_UV = {
    "W": (6.0, 5.0, 14.0, 5.0),
    "N1": (9.0, 12.0, 4.0, 4.0),
    "N2": (20.0, 9.0, 3.0, 3.0),
    "N3": (48.0, 9.0, 2.0, 2.0),
    "R": (9.0, 11.0, 5.0, 4.0),
}
# Band gains of each derivation (frontal leads see more delta, occipital ones more alpha).
_DERIVATION_GAINS = {
    "C3-M2": (1.0, 1.0, 1.0, 1.0), "C4-M1": (1.0, 1.0, 1.0, 1.0),
    "Fpz-Cz": (1.2, 1.0, 0.5, 1.0), "Fz-Cz": (1.1, 1.0, 0.6, 1.0),
    "Pz-Oz": (0.7, 1.0, 1.6, 1.0), "Cz-Oz": (0.8, 1.0, 1.4, 1.0),
}
# The canonical channel each derivation feeds (Sleep-EDF's leads stand in for C3/C4 in the loader).
_DERIVATION_CHANNEL = {"C3-M2": "EEG_C3_A2", "C4-M1": "EEG_C4_A1", "Fpz-Cz": "EEG_C3_A2", "Pz-Oz": "EEG_C4_A1"}
_EMG_STAGE_UV = {"W": 12.0, "N1": 7.0, "N2": 5.0, "N3": 4.5, "R": 1.5}
_HR_STAGE_BPM = {"W": 68.0, "N1": 64.0, "N2": 60.0, "N3": 58.0, "R": 64.0}
_BREATHS_STAGE_PER_MIN = {"W": 15.0, "N1": 14.0, "N2": 13.5, "N3": 13.0, "R": 15.5}
_BREATH_IRREGULARITY = {"W": 1.5, "N1": 1.0, "N2": 0.4, "N3": 0.3, "R": 2.0}
_EPISODE_BPM = {"tachycardia": 106.0, "bradycardia": 35.0}  # plateau of a heart-rate episode
# Outside episodes the heart rate stays inside the 40-90 bpm criteria.
_HR_FLOOR_BPM, _HR_CEILING_BPM = 45.0, 88.0


def _stream(seed: int, name: str) -> np.random.Generator:
    """Independent random stream per (night seed, source name)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _band_noise(rng: np.random.Generator, n: int, fs: float, low: float, high: float) -> np.ndarray:
    """Unit-variance noise band-limited to [low, high] Hz (high clipped below Nyquist)."""
    high = min(high, 0.45 * fs)
    sos = signal.butter(2, [low, high], btype="bandpass", fs=fs, output="sos").astype(np.float32)
    x = signal.sosfilt(sos, rng.standard_normal(n, dtype=np.float32))  # float32: half the time of a night-long filter
    return x / (x[::16].std(dtype=np.float64) + 1e-12)  # every 16th sample estimates the scale well enough


def _lowpass_noise(rng: np.random.Generator, n: int, fs: float, cutoff: float) -> np.ndarray:
    """Unit-variance noise below `cutoff` Hz (slow wander)."""
    sos = signal.butter(1, cutoff, btype="lowpass", fs=fs, output="sos")
    x = signal.sosfiltfilt(sos, rng.standard_normal(n))
    return x / (x.std() + 1e-12)


def _interval_mask(n: int, fs: float, intervals, ramp_s: float = 0.0) -> np.ndarray:
    """0..1 envelope that is 1 inside the (start_s, end_s) intervals, with linear ramps of `ramp_s`."""
    mask = np.zeros(n)
    for start, end in intervals:
        mask[max(int(start * fs), 0) : max(int(end * fs), 0)] = 1.0
    if ramp_s > 0:
        mask = ndimage.uniform_filter1d(mask, max(int(ramp_s * fs), 1))
    return mask


def _half_cosine(n: int) -> np.ndarray:
    """``n`` samples rising smoothly from 0 to 1 (a raised-cosine ramp)."""
    return 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / max(n, 1))


def _place(x: np.ndarray, fs: float, start_s: float, wave: np.ndarray) -> None:
    """Add `wave` into `x` starting at `start_s` (truncated at the end of the night)."""
    i = int(start_s * fs)
    if i < 0 or i >= x.size:
        return
    x[i : i + wave.size] += wave[: x.size - i]


class NightPhysiology:
    """Renders the waveforms of one `Scenario`.

    Parameters
    ----------
    scenario : the planned night.
    seed : the night's seed (every source draws from its own stream of it).
    sfreq : rate (Hz) of EEG, EOG, EMG and ECG; breathing is rendered at `RESP_SFREQ`,
        SpO2 and heart rate at `SLOW_SFREQ`, position at 1 Hz.
    """

    def __init__(self, scenario: Scenario, seed: int, sfreq: float):
        self.scenario = scenario
        self.seed = seed
        self.sfreq = float(sfreq)
        self.n_s = scenario.hypnogram.size * EPOCH_SEC
        events = scenario.events
        self.respiratory = events[events["kind"].isin(["apnea", "hypopnea"])]
        self.arousals = events[events["kind"] == "arousal"]
        self.artefacts = events[events["kind"] == "artefact"]
        self._arousal_cache: dict[float, np.ndarray] = {}
        self.artefact_channels: set[str] = set()  # canonical channels rendered with their artefacts

    # ---- shared timelines ------------------------------------------------------------------
    def _stage_envelope(self, table: dict, fs: float, column: int | None = None) -> np.ndarray:
        """Per-sample value of a per-stage table, linearly blended between epoch centres."""
        values = np.array([table[s] if column is None else table[s][column] for s in self.scenario.hypnogram])
        centres = (np.arange(values.size) + 0.5) * EPOCH_SEC
        per_second = np.interp(np.arange(self.n_s) + 0.5, centres, values).astype(np.float32)
        return np.repeat(per_second, int(fs))  # the blend spans 30 s, so 1-s steps are invisible

    def _stage_mask(self, stage: str, fs: int) -> np.ndarray:
        """Per-sample True inside epochs of `stage` (internal rates are whole Hz)."""
        return np.repeat(self.scenario.hypnogram == stage, EPOCH_SEC * int(fs))

    def _arousal_envelope(self, fs: float) -> np.ndarray:
        """0..1 per sample inside arousals (0.5-s ramps), computed once per rate."""
        if fs not in self._arousal_cache:
            intervals = zip(self.arousals["start_s"], self.arousals["end_s"])
            self._arousal_cache[fs] = _interval_mask(int(self.n_s * fs), fs, intervals, ramp_s=0.5).astype(np.float32)
        return self._arousal_cache[fs]

    def _event_times(self, rng: np.random.Generator, stage: str, rate_per_min: float) -> np.ndarray:
        """Random times (s) of a graphoelement occurring at `rate_per_min` within epochs of `stage`."""
        epochs = np.flatnonzero(self.scenario.hypnogram == stage)
        n = rng.poisson(rate_per_min * epochs.size / 2)
        return np.sort(rng.choice(epochs, size=n) * EPOCH_SEC + rng.uniform(0, EPOCH_SEC, size=n))

    # ---- EEG -------------------------------------------------------------------------------
    @cached_property
    def _eeg_common(self) -> list[np.ndarray]:
        rng = _stream(self.seed, "eeg-common")
        n = int(self.n_s * self.sfreq)
        return [_band_noise(rng, n, self.sfreq, lo, hi) for lo, hi in _BANDS_HZ]

    @cached_property
    def _graphoelements(self) -> np.ndarray:
        """Spindles, K-complexes (N2) and sawtooth waves (REM), common to all derivations (uV)."""
        fs, rng = self.sfreq, _stream(self.seed, "graphoelements")
        x = np.zeros(int(self.n_s * fs))
        for t in np.concatenate([self._event_times(rng, "N2", 4.0), self._event_times(rng, "N3", 1.0)]):
            duration, freq = rng.uniform(0.6, 1.5), rng.uniform(12.0, 14.0)
            tt = np.arange(int(duration * fs)) / fs
            _place(x, fs, t, rng.uniform(15, 30) * np.hanning(tt.size) * np.sin(2 * np.pi * freq * tt))
        for t in self._event_times(rng, "N2", 1.5):
            tt = np.arange(int(1.2 * fs)) / fs
            amplitude = rng.uniform(70, 120)
            _place(x, fs, t, amplitude * (-np.exp(-(((tt - 0.3) / 0.12) ** 2)) + 0.6 * np.exp(-(((tt - 0.7) / 0.2) ** 2))))
        for t in self._event_times(rng, "R", 2.0):
            freq = rng.uniform(2.0, 3.0)
            tt = np.arange(int(rng.uniform(2, 4) * fs)) / fs
            _place(x, fs, t, rng.uniform(20, 35) * np.hanning(tt.size) * signal.sawtooth(2 * np.pi * freq * tt, 0.2))
        return x

    def eeg(self, derivation: str) -> np.ndarray:
        """One EEG derivation (``"C3-M2"``, ``"C4-M1"``, ``"Fpz-Cz"``, ``"Pz-Oz"``, ``"Fz-Cz"``, ``"Cz-Oz"``), uV.

        Examples
        --------
        >>> x = tiny_physiology().eeg("C3-M2")                 # 10 min at 64 Hz
        >>> x.size, round(float(x.std()))
        (38400, 81)
        """
        fs = self.sfreq
        rng = _stream(self.seed, derivation)
        n = int(self.n_s * fs)
        arousal = self._arousal_envelope(fs)
        x = 2.0 * _band_noise(rng, n, fs, 0.5, 40.0)  # background and amplifier noise
        for band, ((lo, hi), common, gain) in enumerate(zip(_BANDS_HZ, self._eeg_common, _DERIVATION_GAINS[derivation])):
            amplitude = self._stage_envelope(_EEG_STAGE_UV, fs, band) * gain
            if band == 0:
                amplitude *= 1 - 0.6 * arousal
            elif band == 2:
                amplitude += 18.0 * arousal * gain
            elif band == 3:
                amplitude += 8.0 * arousal
            x += amplitude * (0.85 * common + 0.5 * _band_noise(rng, n, fs, lo, hi))
        x += self._graphoelements * (0.8 if derivation.startswith(("P", "Cz-O")) else 1.0)
        return self.apply_artefacts(x, _DERIVATION_CHANNEL.get(derivation), rng)

    def mastoid(self, name: str) -> np.ndarray:
        """A mastoid reference electrode (M1/M2) against the recording reference, uV.

        Examples
        --------
        >>> x = tiny_physiology().mastoid("M2")
        >>> x.size, round(float(x.std()), 1)
        (38400, 4.8)
        """
        rng = _stream(self.seed, name)
        n = int(self.n_s * self.sfreq)
        return 0.3 * self._eeg_common[0] * self._stage_envelope(_EEG_STAGE_UV, self.sfreq, 0) + 3.0 * rng.standard_normal(n)

    # ---- EOG -------------------------------------------------------------------------------
    @cached_property
    def _eye_position(self) -> np.ndarray:
        """Horizontal/vertical eye signal seen by E1 (E2 sees it inverted), AC-coupled, uV."""
        fs, rng = self.sfreq, _stream(self.seed, "eyes")
        n = int(self.n_s * fs)
        steps = np.zeros(n)
        saccades = [self._event_times(rng, "W", 18.0)]
        for burst in self._event_times(rng, "R", 4.0):  # rapid eye movements come in bursts
            saccades.append(burst + np.cumsum(rng.uniform(0.25, 0.8, size=rng.integers(2, 8))))
        times = np.concatenate(saccades)
        idx = (times * fs).astype(int)
        keep = idx < n
        np.add.at(steps, idx[keep], rng.choice([-1, 1], size=keep.sum()) * rng.uniform(60, 200, size=keep.sum()))
        position = ndimage.uniform_filter1d(np.cumsum(steps), max(int(0.04 * fs), 1))  # ~40-ms saccade rise
        blinks = np.zeros(n)
        blink_idx = (self._event_times(rng, "W", 12.0) * fs).astype(int)
        np.add.at(blinks, blink_idx[blink_idx < n], rng.uniform(80, 160, size=(blink_idx < n).sum()))
        position += signal.oaconvolve(blinks, np.hanning(int(0.3 * fs)), mode="full")[:n]
        slow = 60.0 * _lowpass_noise(rng, n, fs, 0.3) * self._stage_envelope({s: float(s == "N1") for s in STAGES}, fs)
        coupling = signal.butter(1, 0.3, btype="highpass", fs=fs, output="sos")  # EOG amplifier time constant
        return signal.sosfilt(coupling, position) + slow

    def eog(self, side: str) -> np.ndarray:
        """``"E1-M2"`` (left) or ``"E2-M1"`` (right), uV.

        Examples
        --------
        >>> physiology = tiny_physiology()
        >>> left, right = physiology.eog("E1-M2"), physiology.eog("E2-M1")
        >>> left.size, round(float(np.corrcoef(left, right)[0, 1]), 2)      # eye movements: opposite signs
        (38400, -0.98)
        """
        rng = _stream(self.seed, side)
        n = int(self.n_s * self.sfreq)
        polarity = 1.0 if side == "E1-M2" else -1.0
        frontal = 0.35 * (self._eeg_common[0] * self._stage_envelope(_EEG_STAGE_UV, self.sfreq, 0) + self._graphoelements)
        x = polarity * self._eye_position + frontal + 3.0 * rng.standard_normal(n)
        return self.apply_artefacts(x, "EOG_Left" if side == "E1-M2" else "EOG_Right", rng)

    # ---- chin EMG --------------------------------------------------------------------------
    @cached_property
    def _emg_envelope(self) -> np.ndarray:
        fs, rng = self.sfreq, _stream(self.seed, "emg-envelope")
        envelope = self._stage_envelope(_EMG_STAGE_UV, fs) * (1 + 3.0 * self._arousal_envelope(fs))
        twitches = self._event_times(rng, "R", 15.0)
        envelope += 8.0 * _interval_mask(envelope.size, fs, zip(twitches, twitches + rng.uniform(0.1, 0.25, twitches.size)))
        return envelope

    def chin_emg(self) -> np.ndarray:
        """Chin1-Chin2 submental EMG, uV.

        Examples
        --------
        >>> x = tiny_physiology().chin_emg()
        >>> x.size, round(float(x.std()), 1)
        (38400, 8.2)
        """
        rng = _stream(self.seed, "Chin1-Chin2")
        n = int(self.n_s * self.sfreq)
        x = self._emg_envelope * _band_noise(rng, n, self.sfreq, 10.0, 100.0)
        return self.apply_artefacts(x, "EMG_Chin", rng)

    def chin_emg_rms(self) -> np.ndarray:
        """Chin EMG RMS per second (1 Hz), uV, as low-rate recorders store it.

        Examples
        --------
        >>> rms = tiny_physiology().chin_emg_rms()
        >>> rms.size, bool((rms >= 0).all())                              # one value per second
        (600, True)
        """
        x = self.chin_emg()
        fs = int(self.sfreq)
        return np.sqrt((x[: self.n_s * fs].reshape(self.n_s, fs) ** 2).mean(axis=1))

    # ---- heart -----------------------------------------------------------------------------
    @cached_property
    def heart_rate(self) -> np.ndarray:
        """Instantaneous heart rate driving the ECG, bpm at `SLOW_SFREQ`."""
        fs, rng = SLOW_SFREQ, _stream(self.seed, "heart-rate")
        n = self.n_s * fs
        hr = self._stage_envelope(_HR_STAGE_BPM, fs) + rng.uniform(-5, 5)
        hr += 2.5 * np.sin(self._breath_phase[:: RESP_SFREQ // fs][:n])  # respiratory sinus arrhythmia
        hr += 1.5 * _lowpass_noise(rng, n, fs, 0.1) + 2.0 * _lowpass_noise(rng, n, fs, 0.05) * self._stage_mask("R", fs)
        resp = self.respiratory
        hr -= 4.0 * _interval_mask(n, fs, zip(resp["start_s"], resp["end_s"]), ramp_s=3.0)
        # Surge at each event end and arousal: ~3-s rise, ~8-s decay.
        kick = np.zeros(n)
        for times, size in ((resp["end_s"], 14.0), (self.arousals["start_s"], 8.0)):
            idx = (np.asarray(times) * fs).astype(int)
            np.add.at(kick, idx[idx < n], size)
        kernel_t = np.arange(30 * fs) / fs
        kernel = (1 - np.exp(-kernel_t / 1.5)) * np.exp(-kernel_t / 8.0)
        hr += signal.oaconvolve(kick, kernel / kernel.max(), mode="full")[:n]
        hr = np.clip(hr, _HR_FLOOR_BPM, _HR_CEILING_BPM)
        for row in self.scenario.events[self.scenario.events["kind"].isin(_EPISODE_BPM)].itertuples():
            plateau = _interval_mask(n, fs, [(row.start_s - 10, row.end_s + 10)], ramp_s=20.0)
            hr += plateau * (_EPISODE_BPM[row.kind] - hr)
        return hr

    @cached_property
    def beat_times(self) -> np.ndarray:
        """R-peak times (s) from integrating the heart rate."""
        fs = SLOW_SFREQ
        cycles = np.cumsum(self.heart_rate / 60.0 / fs, dtype=np.float64)
        t = np.arange(cycles.size) / fs
        return np.interp(np.arange(1, int(cycles[-1])) + 0.5, cycles, t)

    def ecg(self) -> np.ndarray:
        """Lead-II-like ECG, uV: PQRST template at each beat, respiratory amplitude modulation, wander.

        Examples
        --------
        >>> x = tiny_physiology().ecg()
        >>> x.size, round(float(x.max()))                                  # R peaks
        (38400, 1302)
        """
        fs, rng = self.sfreq, _stream(self.seed, "ECG")
        n = int(self.n_s * fs)
        tt = np.arange(-0.3, 0.45, 1 / fs)
        waves = ((120, -0.2, 0.025), (-100, -0.03, 0.01), (1200, 0.0, 0.012), (-250, 0.035, 0.012), (300, 0.28, 0.05))
        template = sum(a * np.exp(-(((tt - c) / w) ** 2)) for a, c, w in waves)
        impulses = np.zeros(n)
        idx = np.round(self.beat_times * fs).astype(int)
        phase = self._breath_phase[np.minimum((self.beat_times * RESP_SFREQ).astype(int), self._breath_phase.size - 1)]
        np.add.at(impulses, idx[idx < n], (1 + 0.08 * np.sin(phase))[idx < n])
        lead = int(round(0.3 * fs))  # template starts 0.3 s before the R peak
        x = signal.oaconvolve(impulses, template, mode="full")[lead : lead + n]
        x += 40.0 * _lowpass_noise(rng, n, fs, 0.3) + 8.0 * rng.standard_normal(n)
        return self.apply_artefacts(x, "ECG", rng)

    def pulse_rate(self) -> np.ndarray:
        """Heart rate as an oximeter reports it (beat-to-beat rate averaged over ~4 s), bpm at `SLOW_SFREQ`.

        Examples
        --------
        >>> rate = tiny_physiology().pulse_rate()
        >>> rate.size == 600 * SLOW_SFREQ, round(float(rate.mean()))
        (True, 66)
        """
        beats = self.beat_times
        instantaneous = 60.0 / np.diff(beats)
        t = np.arange(self.n_s * SLOW_SFREQ) / SLOW_SFREQ
        rate = np.interp(t, beats[1:], instantaneous)
        return ndimage.uniform_filter1d(rate, 4 * SLOW_SFREQ)

    # ---- breathing -------------------------------------------------------------------------
    @cached_property
    def _breath_phase(self) -> np.ndarray:
        fs, rng = RESP_SFREQ, _stream(self.seed, "breathing")
        n = self.n_s * fs
        rate = self._stage_envelope(_BREATHS_STAGE_PER_MIN, fs) + rng.uniform(-1.5, 1.5)
        rate += self._stage_envelope(_BREATH_IRREGULARITY, fs) * _lowpass_noise(rng, n, fs, 0.05)
        return 2 * np.pi * np.cumsum(np.maximum(rate, 8.0) / 60.0 / fs, dtype=np.float64)

    @cached_property
    def _breathing_envelopes(self) -> dict[str, np.ndarray]:
        """Per-sample flow amplitude, effort amplitude, abdominal phase shift (rad), flattening and snoring."""
        fs, rng = RESP_SFREQ, _stream(self.seed, "breathing-envelopes")
        n = self.n_s * fs
        flow, effort = np.ones(n), np.ones(n)
        shift, flat, snore = np.zeros(n), np.zeros(n), np.zeros(n)
        supine_nrem = (np.repeat(self.scenario.position_s == 2, fs) & ~self._stage_mask("W", fs) & ~self._stage_mask("R", fs))
        snore[supine_nrem] = 0.5
        for row in self.respiratory.itertuples():
            i0, i1 = int(row.start_s * fs), int(row.end_s * fs)
            remaining = 1 - row.flow_drop_pct / 100
            # Real events are not rectangles: the flow fades in over a few breaths before the
            # reduction (the truth's start) and climbs back after it (the truth's end), and its
            # level drifts inside the event (a hypopnea's by up to +-11 % of baseline).
            fade_in, fade_out = (int(rng.uniform(2.0, 5.0) * fs) for _ in range(2))
            flow[i0 - fade_in : i0] = np.minimum(flow[i0 - fade_in : i0], 1 - (1 - remaining) * _half_cosine(fade_in))
            wander = rng.uniform(0.6, 1.4) * np.sin(np.linspace(0, np.pi * rng.uniform(1, 3), i1 - i0) + rng.uniform(0, 6.3))
            flow[i0:i1] = np.clip(remaining + (0.08 if row.kind == "hypopnea" else 0.02) * wander, 0.0, 1.0)
            if row.kind == "hypopnea":
                effort[i0:i1], shift[i0:i1], flat[i0:i1], snore[i0:i1] = 0.85, np.pi / 4, 1.0, 1.2
            elif row.subtype == "central":
                effort[i0:i1], snore[i0:i1] = remaining, 0.0
            else:
                # Mixed: effort absent first, then resumes against the closed airway.
                i_obstructed = i0 + int((i1 - i0) * rng.uniform(0.4, 0.6)) if row.subtype == "mixed" else i0
                effort[i0:i_obstructed] = remaining
                effort[i_obstructed:i1] = np.linspace(0.8, 1.3, i1 - i_obstructed)  # crescendo against the obstruction
                shift[i_obstructed:i1] = np.pi  # paradoxical thorax-abdomen motion
                snore[i0:i1] = 0.0
            recovery = slice(i1, i1 + 8 * fs)  # two or three large recovery breaths
            flow[recovery], effort[recovery] = 1.5, 1.4
            flow[i1 : i1 + fade_out] = remaining + (1.5 - remaining) * _half_cosine(fade_out)
            snore[recovery] = 0.0 if row.subtype == "central" else 1.3
        for start in self.scenario.sighs_s:  # one deep breath, then a short central pause
            i0, i1 = int(start * fs), int((start + 5) * fs)
            i2 = i1 + int(rng.uniform(4, 7) * fs)
            flow[i0:i1], effort[i0:i1] = 2.0, 1.8
            flow[i1:i2], effort[i1:i2] = 0.05, 0.05
        smooth = lambda x: ndimage.uniform_filter1d(x, int(1.5 * fs))  # noqa: E731 - crisp 1.5-s transitions
        # Breath-to-breath depth varies, most in REM and wake; plus a slow drift.
        breath = (self._breath_phase // (2 * np.pi)).astype(int)
        # Kept small enough that no 10-s stretch of normal breathing drops by 30 % (not even in the
        # raw nasal pressure, which squares it): natural variation never meets a hypopnea rule.
        spread = self._stage_envelope({"W": 0.06, "N1": 0.05, "N2": 0.04, "N3": 0.03, "R": 0.08}, fs)
        depth = ndimage.uniform_filter1d(1 + spread * rng.standard_normal(breath[-1] + 1)[breath], fs // 2)
        # Amplitude drifts over the night (sensor position, sleep depth): +-8 % over ~10 min, +-3 % faster.
        variability = depth * (1 + 0.03 * _lowpass_noise(rng, n, fs, 0.02) + 0.08 * _lowpass_noise(rng, n, fs, 0.002))
        return {"flow": smooth(flow) * variability, "effort": smooth(effort) * variability, "shift": smooth(shift),
                "flat": smooth(flat), "snore": smooth(snore)}

    def _flow(self) -> np.ndarray:
        phase, env = self._breath_phase, self._breathing_envelopes
        return env["flow"] * (np.sin(phase) + 0.12 * np.sin(2 * phase))

    def airflow_thermistor(self) -> np.ndarray:
        """Oronasal thermistor, uV (inspiration up): flow seen through the sensor's thermal lag.

        Examples
        --------
        >>> flow = tiny_physiology().airflow_thermistor()
        >>> flow.size == 600 * RESP_SFREQ, round(float(flow.std()))
        (True, 81)
        """
        rng = _stream(self.seed, "Airflow")
        lag = signal.butter(1, 1.0, btype="lowpass", fs=RESP_SFREQ, output="sos")
        x = 120.0 * signal.sosfilt(lag, self._flow()) + 2.0 * rng.standard_normal(self.n_s * RESP_SFREQ)
        return self.apply_artefacts(x, "AF", rng, fs=RESP_SFREQ)

    def nasal_pressure(self) -> np.ndarray:
        """Nasal cannula pressure, cmH2O (inspiration up, not linearised), flattened in obstructive hypopneas.

        Examples
        --------
        >>> pressure = tiny_physiology().nasal_pressure()
        >>> pressure.size == 600 * RESP_SFREQ, round(float(pressure.std()), 2)
        (True, 0.56)
        """
        rng = _stream(self.seed, "Pressure")
        flow, env = self._flow(), self._breathing_envelopes
        ceiling = 0.55 * env["flow"]
        flattened = np.where(flow > ceiling, ceiling, flow)
        x = flow + env["flat"] * (flattened - flow)
        # Pressure at the cannula grows with the square of flow (a 50 % flow drop shows as ~75 %).
        return 0.8 * np.sign(x) * x**2 + 0.002 * rng.standard_normal(x.size)

    def effort(self, belt: str) -> np.ndarray:
        """``"Thorax"`` or ``"Abdomen"`` RIP belt, uV (inspiration up).

        Examples
        --------
        >>> physiology = tiny_physiology()
        >>> thorax, abdomen = physiology.effort("Thorax"), physiology.effort("Abdomen")
        >>> thorax.size == 600 * RESP_SFREQ, round(float(np.corrcoef(thorax, abdomen)[0, 1]), 2)   # mostly in phase
        (True, 0.86)
        """
        rng = _stream(self.seed, belt)
        env = self._breathing_envelopes
        shift = env["shift"] if belt == "Abdomen" else 0.0
        gain = 200.0 if belt == "Thorax" else 160.0
        n = self.n_s * RESP_SFREQ
        x = gain * env["effort"] * -np.cos(self._breath_phase + shift) + 10.0 * _lowpass_noise(rng, n, RESP_SFREQ, 0.05)
        return self.apply_artefacts(x, "THX" if belt == "Thorax" else "ABD", rng, fs=RESP_SFREQ)

    def snore(self, fs: float) -> np.ndarray:
        """Snore microphone, uV: noise bursts on inspiration, loud on obstructive hypopneas and recovery breaths.

        Examples
        --------
        >>> x = tiny_physiology().snore(fs=128)
        >>> x.size, round(float(x.std()), 1)
        (76800, 12.6)
        """
        rng = _stream(self.seed, "Snore")
        n = int(self.n_s * fs)
        t = np.arange(n) / fs
        grid = np.arange(self.n_s * RESP_SFREQ) / RESP_SFREQ
        inspiring = np.sin(np.interp(t, grid, self._breath_phase)) > 0.3
        loudness = np.interp(t, grid, self._breathing_envelopes["snore"])
        return 40.0 * loudness * inspiring * _band_noise(rng, n, fs, 0.2 * fs, 0.45 * fs) + 1.0 * rng.standard_normal(n)

    # ---- oximetry, position, housekeeping ----------------------------------------------------
    def spo2(self) -> np.ndarray:
        """Oxygen saturation, % at `SLOW_SFREQ`: baseline with the planned desaturation dips.

        Examples
        --------
        >>> spo2 = tiny_physiology().spo2()
        >>> spo2.size == 600 * SLOW_SFREQ, round(float(spo2.min()), 1), round(float(spo2.max()), 1)
        (True, 86.1, 96.8)
        """
        fs, rng = SLOW_SFREQ, _stream(self.seed, "SpO2")
        n = self.n_s * fs
        deficit = np.zeros(n)
        events = self.scenario.events
        # Associated desaturations are drawn from their respiratory event's row (same dip).
        dips = events[events["kind"].isin(["apnea", "hypopnea"]) | (events["subtype"] == "isolated")]
        for row in dips.itertuples():
            fall = row.end_s - row.start_s  # resp. events: the fall lasts as long as the event; desaturations: onset->nadir
            onset = row.nadir_s - fall
            recovery = rng.uniform(8, 12)
            t = np.arange(int(onset * fs), min(int((row.nadir_s + recovery) * fs), n)) / fs
            shape = np.where(t < row.nadir_s, 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / fall, 0, 1)),
                             0.5 + 0.5 * np.cos(np.pi * np.clip((t - row.nadir_s) / recovery, 0, 1)))
            seg = slice(int(onset * fs), int(onset * fs) + t.size)
            deficit[seg] = np.maximum(deficit[seg], row.desat_pct * shape)
        x = self.scenario.spo2_baseline - deficit + 0.15 * _lowpass_noise(rng, n, fs, 0.2)
        return np.minimum(x, 100.0)

    def position(self) -> np.ndarray:
        """Body position, SleepLM codes (0 Right, 1 Left, 2 Supine, 3 Prone) at 1 Hz.

        Examples
        --------
        >>> codes = tiny_physiology().position()
        >>> codes.size, sorted(set(codes.tolist()))
        (600, [2.0])
        """
        return self.scenario.position_s.astype(float)

    def rectal_temperature(self) -> np.ndarray:
        """Core temperature, degC at 1 Hz: the nocturnal fall of ~0.5 degC.

        Examples
        --------
        >>> temperature = tiny_physiology().rectal_temperature()
        >>> temperature.size, round(float(temperature[0]), 2), round(float(temperature[-1]), 2)
        (600, 36.95, 36.78)
        """
        rng = _stream(self.seed, "Temp")
        progress = np.arange(self.n_s) / max(self.n_s, 1)
        return 37.1 - 0.5 * np.sin(np.pi * progress * 0.8) + 0.02 * _lowpass_noise(rng, self.n_s, 1.0, 0.01)

    # ---- artefacts -------------------------------------------------------------------------
    def apply_artefacts(self, x: np.ndarray, channel: str | None, rng: np.random.Generator,
                        fs: float | None = None) -> np.ndarray:
        """Apply the planned artefacts of `channel` (canonical name) to `x` (in place) and return it.

        The channel is remembered in `artefact_channels`, so the truth can list only the
        artefacts a montage really carries. ``channel=None`` (a lead that feeds no canonical
        channel) gets none.

        Examples
        --------
        >>> physiology = tiny_physiology()
        >>> planned = physiology.artefacts
        >>> planned.loc[planned["channel"] == "EEG_C4_A1", ["subtype", "start_s", "end_s"]]   # electrode off for 60 s
          subtype  start_s   end_s
        1    flat    51.68  111.68
        >>> x = physiology.apply_artefacts(np.ones(600 * 64), "EEG_C4_A1", np.random.default_rng(0))
        >>> sorted(physiology.artefact_channels), float((x == 0).sum() / 64)   # seconds at 0
        (['EEG_C4_A1'], 60.0)
        """
        if channel is None:
            return x
        self.artefact_channels.add(channel)
        fs = self.sfreq if fs is None else fs
        rows = self.artefacts[self.artefacts["channel"].str.split(",").apply(lambda chans: channel in chans)]
        for row in rows.itertuples():
            i0, i1 = int(row.start_s * fs), min(int(row.end_s * fs), x.size)
            t = np.arange(i1 - i0) / fs
            if row.subtype == "flat":  # electrode or sensor off: the amplifier reads a constant
                x[i0:i1] = 0.0
            elif row.subtype == "electrode_pop":
                x[i0:i1] += rng.choice([-1, 1]) * rng.uniform(250, 400) * np.exp(-t / 0.08)
            elif row.subtype == "clipping":  # a sweat drift pushes the signal into the amplifier rail
                x[i0:i1] = np.clip(x[i0:i1] + 1.8 * EEG_RANGE_UV * np.sin(np.pi * t / t[-1]), -EEG_RANGE_UV, EEG_RANGE_UV)
            elif row.subtype == "movement":
                scale = 40.0 if channel == "EMG_Chin" else 150.0 if fs > RESP_SFREQ else 3.0 * np.std(x[:i0] if i0 else x)
                x[i0:i1] += scale * _band_noise(rng, i1 - i0 + 64, fs, 0.3 if channel != "EMG_Chin" else 10.0, 0.4 * fs)[64:]
        return x
