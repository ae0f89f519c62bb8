"""Per-epoch features on a hand-built night whose content is known exactly."""

import numpy as np
import pytest

from physio_night import make_night
from sleeplm.measure.features import DOMAIN_COLUMNS, epoch_features, heart_beats, missing_reasons

STAGES = ["W"] * 4 + ["N2"] * 6 + ["N3"] * 6 + ["R"] * 4


@pytest.fixture(scope="module")
def night():
    hr = np.full(len(STAGES) * 30, 60.0)
    hr[300:420] = 100.0  # epochs 10-13 at 100 bpm
    pos = np.full(len(STAGES) * 30, 2.0)
    pos[450:] = 1.0  # supine, then left from epoch 15
    return make_night(STAGES, hr_bpm=hr, positions=pos)


@pytest.fixture(scope="module")
def table(night):
    return epoch_features(night)


def test_one_row_per_epoch_with_domain_prefixes(table):
    assert len(table) == len(STAGES)
    assert list(table.columns) == [c for cols in DOMAIN_COLUMNS.values() for c in cols]
    assert all(c.split("_")[0] in ("brain", "cardiac", "resp", "posmus") for c in table.columns)


def test_eeg_bands_follow_the_stages(table):
    assert (table.loc[0:3, "brain_c3_alpha_rel"] > 0.8).all()  # 10 Hz waking rhythm
    assert (table.loc[10:15, "brain_c4_delta_rel"] > 0.9).all()  # 1 Hz slow waves
    assert (table.loc[4:9, "brain_c3_theta_rel"] > 0.5).all()  # theta background (a K-complex adds delta)
    rel = table[[f"brain_c3_{b}_rel" for b in ("delta", "theta", "alpha", "sigma", "beta")]].sum(axis=1)
    assert np.allclose(rel, 1.0, atol=0.05)


def test_spindles_found_in_n2_only(table):
    assert table.loc[4:9, "brain_spindle_count"].sum() >= 5
    assert table.loc[0:3, "brain_spindle_count"].sum() == 0
    assert table.loc[10:15, "brain_spindle_count"].sum() == 0


def test_kcomplexes_are_isolated_waves_not_slow_wave_trains(table):
    assert (table.loc[4:9, "brain_kcomplex_count"] == 1).all()
    assert table.loc[10:15, "brain_kcomplex_count"].sum() == 0  # N3: continuous 1-Hz slow waves
    assert table.loc[0:3, "brain_kcomplex_count"].sum() == 0


def test_rapid_eye_movements_in_rem(table):
    rem = table.loc[16:19, "brain_eog_rapid_power_uv2"].mean()
    assert rem > 20 * table.loc[4:15, "brain_eog_rapid_power_uv2"].mean()


def test_heart_rate_from_r_peaks(night, table):
    assert table.loc[0:8, "cardiac_hr_mean_bpm"].between(59, 61).all()
    assert table.loc[10:13, "cardiac_hr_mean_bpm"].between(99, 101).all()
    times, rr = heart_beats(night)
    assert len(times) == pytest.approx(600 * 60 / 60 + 120 * 40 / 60, rel=0.02)
    assert table.loc[0:8, "cardiac_rmssd_ms"].max() < 10  # a metronome heart
    assert table.loc[4, "cardiac_spo2_mean_pct"] == pytest.approx(96.0)


def test_breathing_and_position(table):
    assert table["resp_thx_rate_per_min"].between(14.5, 15.5).all()
    assert table["resp_thx_abd_phase_deg"].max() < 10
    assert table["resp_flow_amplitude_ratio"].between(0.9, 1.1).all()
    assert list(table.loc[[0, 14, 15, 19], "posmus_position"]) == ["Supine", "Supine", "Left", "Left"]
    assert table.loc[16:19, "posmus_emg_rms_uv"].mean() < 0.4 * table.loc[4:9, "posmus_emg_rms_uv"].mean()


def test_paradoxical_effort_measured():
    rec = make_night(["N2"] * 4)
    rec.signals["ABD"].data = -rec.signals["ABD"].data
    assert epoch_features(rec)["resp_thx_abd_phase_deg"].min() > 170


def test_missing_channels_are_nan_with_a_reason():
    rec = make_night(["N2"] * 4, drop=("ECG", "SpO2", "Pressure", "EOG_Left", "EOG_Right"))
    table = epoch_features(rec)
    reasons = missing_reasons(rec)
    assert table["cardiac_hr_mean_bpm"].isna().all() and table["cardiac_rmssd_ms"].isna().all()
    assert table["brain_eog_rapid_power_uv2"].isna().all()
    assert "ECG" in reasons["cardiac_rmssd_ms"] and "SpO2" in reasons["cardiac_spo2_min_pct"]
    assert "brain_c3_delta_rel" not in reasons and table["brain_c3_delta_rel"].notna().all()


def test_envelope_rate_signals_are_not_measured_as_raw():
    from sleeplm.io.recording import Signal

    rec = make_night(["N2"] * 4)
    rec.signals["EMG_Chin"] = Signal(np.full(120, 5.0), 1.0, "uV", "EMG submental")  # a 1-Hz RMS envelope
    table = epoch_features(rec)
    assert table["posmus_emg_median_freq_hz"].isna().all()
    assert "1 Hz, too slow" in missing_reasons(rec)["posmus_emg_rms_uv"]


def test_flow_flattening_emg_bursts_and_heart_rate_trend():
    hr = np.full(4 * 30, 60.0)
    hr[60:90] = np.linspace(60, 90, 30)  # epoch 2: heart rate climbs 60 -> 90 bpm within 30 s
    rec = make_night(["N2"] * 4, hr_bpm=hr)
    flow = rec.signals["AF"]
    fs = int(flow.sfreq)
    flow.data[: 60 * fs] = np.clip(flow.data[: 60 * fs], None, 0.3)  # epochs 0-1: inspiration cut flat (flow limitation)
    emg = rec.signals["EMG_Chin"]
    fs_emg = int(emg.sfreq)
    emg.data[int(95.0 * fs_emg) : int(95.5 * fs_emg)] *= 20  # one chin EMG burst in epoch 3
    table = epoch_features(rec)
    assert (table.loc[0:1, "resp_flow_flattening"] > 0.7).all()
    assert (table.loc[2:3, "resp_flow_flattening"] < 0.5).all()  # a sinusoid spends ~40 % of inspiration above 80 % of peak
    assert list(table["posmus_emg_burst_count"]) == [0, 0, 0, 1]
    # White noise high-passed at 10 Hz, sampled at 128 Hz: its power is flat from 10 to 64 Hz.
    assert table["posmus_emg_median_freq_hz"].between(33, 41).all()
    assert table.loc[2, "cardiac_hr_slope_bpm_per_min"] == pytest.approx(60, rel=0.15)  # 30 bpm in half a minute
    assert abs(table.loc[0, "cardiac_hr_slope_bpm_per_min"]) < 2


def test_a_sensor_that_fell_off_is_not_measured():
    """EEG C3 and the chin EMG flat from epoch 2 on: NaN there (not 0 spindles, 0 uV), with a reason."""
    rec = make_night(["N2"] * 6)
    for name in ("EEG_C3_A2", "EMG_Chin"):
        sig = rec.signals[name]
        sig.data[int(60 * sig.sfreq) :] = 0.0
    table = epoch_features(rec)
    assert table.loc[2:, "brain_c3_delta_rel"].isna().all() and table.loc[:1, "brain_c3_delta_rel"].notna().all()
    assert table.loc[2:, "posmus_emg_rms_uv"].isna().all() and table.loc[2:, "posmus_emg_burst_count"].isna().all()
    assert table["brain_c4_delta_rel"].notna().all()
    # C4 still measures: spindles and K-complexes are counted on it where C3 is flat.
    assert (table.loc[2:, "brain_kcomplex_count"] == 1).all() and (table.loc[2:, "brain_spindle_count"] >= 1).all()
    assert table.loc[2:, "brain_eeg_power_uv2"].to_numpy() == pytest.approx(table.loc[:1, "brain_eeg_power_uv2"].mean(), rel=0.5)
    from sleeplm.measure.quality import artefact_segments

    reasons = missing_reasons(rec, artefact_segments(rec))
    assert "EMG_Chin flat or clipped in 67% of the epochs" in reasons["posmus_emg_rms_uv"]
    assert "brain_c4_delta_rel" not in reasons and "brain_spindle_count" not in reasons


def _with_noise_ecg(rec, start_s=0.0, end_s=None):
    """`rec` whose ECG is Gaussian noise (a disconnected lead) from `start_s` to `end_s`, and no HR channel."""
    from dataclasses import replace

    from sleeplm.io.recording import Signal

    ecg = rec.signals["ECG"]
    data = ecg.data.copy()
    span = slice(int(start_s * ecg.sfreq), None if end_s is None else int(end_s * ecg.sfreq))
    data[span] = np.random.default_rng(0).normal(0, 100, data[span].size)
    signals = {k: v for k, v in rec.signals.items() if k != "HR"}
    return replace(rec, signals={**signals, "ECG": Signal(data, ecg.sfreq, ecg.unit, ecg.source)})


def test_a_noise_ecg_gives_no_heart_rate_and_says_why():
    """Gaussian noise on the ECG used to read as ~140 bpm (tachycardia all night): now it is not measured."""
    from types import SimpleNamespace

    from sleeplm.measure.analysis import analyze_night
    from sleeplm.measure.features import heart_rate_per_second
    from tools.events import not_measured

    rec = _with_noise_ecg(make_night(STAGES))
    hr = heart_rate_per_second(rec)
    assert hr is None or np.isnan(hr).all()
    analysis = analyze_night(rec, automatic_staging=False)
    assert analysis.summary["hr_mean"] is None
    assert analysis.summary["not_assessable"]["hr_mean"].startswith("heart rate not measurable: the ECG shows no consistent heartbeat")
    assert not analysis.events["kind"].isin(["tachycardia", "bradycardia"]).any()
    missing = not_measured(SimpleNamespace(analysis=analysis, rec=rec), ("tachycardia", "bradycardia"))
    assert set(missing) == {"tachycardia", "bradycardia"} and "not measurable" in missing["tachycardia"]


def test_noise_in_part_of_the_ecg_leaves_only_that_part_unmeasured():
    from sleeplm.measure.features import heart_rate_per_second

    rec = _with_noise_ecg(make_night(STAGES), 120.0, 300.0)       # epochs 4-9
    hr = heart_rate_per_second(rec)
    assert np.isnan(hr[130:290]).all()
    assert np.nanmean(hr[:110]) == pytest.approx(60, abs=1) and np.nanmean(hr[310:]) == pytest.approx(60, abs=1)
    assert np.isfinite(hr[310:]).mean() > 0.95
    table = epoch_features(rec)
    assert table.loc[5:8, "cardiac_hr_mean_bpm"].isna().all() and table.loc[10:, "cardiac_hr_mean_bpm"].notna().all()
