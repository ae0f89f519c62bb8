"""Resampling without aliasing, artefact masks, robust and per-epoch z-scores, epoching."""

from __future__ import annotations

import numpy as np
import pytest

from scipy.signal import resample_poly

from sleeplm.io.preprocess import (
    Z_CLIP,
    antialias_fir,
    artefact_mask,
    channel_warnings,
    decimate,
    flat_seconds,
    hold_resample,
    resample,
    robust_center_scale,
    to_epochs,
    zscore_night,
    usable_mean_sd,
    zscore_per_epoch,
)
from sleeplm.io.recording import CANONICAL_CHANNELS


def amplitude_at(x: np.ndarray, sfreq: float, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / (len(x) / 4)
    return float(spectrum[int(round(freq * len(x) / sfreq))])


def test_resample_keeps_band_and_removes_what_would_alias():
    sfreq, seconds = 256, 60
    t = np.arange(sfreq * seconds) / sfreq
    x = np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 50 * t)  # 50 Hz would alias to 14 Hz at 64 Hz
    y = resample(x, sfreq, 64)
    assert y.dtype == np.float32 and len(y) == 64 * seconds
    assert amplitude_at(y, 64, 10) == pytest.approx(1.0, abs=0.02)
    assert amplitude_at(y, 64, 14) < 0.01
    naive = x[::4]  # decimation without a filter: the alias is there
    assert amplitude_at(naive, 64, 14) > 0.9


def tone_gain_db(freq: float, sfreq_in: float = 256, sfreq_out: float = 64, seconds: int = 120) -> float:
    """Output/input amplitude (dB) of a unit tone resampled, ends trimmed."""
    t = np.arange(int(sfreq_in * seconds)) / sfreq_in
    y = resample(np.sin(2 * np.pi * freq * t), sfreq_in, sfreq_out)[int(10 * sfreq_out) : -int(10 * sfreq_out)]
    return float(20 * np.log10(np.sqrt(2) * y.std()))


def test_antialiasing_spec_256_to_64_hz():
    assert abs(tone_gain_db(10)) < 0.5  # passes
    assert abs(tone_gain_db(25)) < 0.5  # flat to 0.8 x Nyquist
    assert tone_gain_db(40) <= -40  # would alias onto 24 Hz
    assert tone_gain_db(50) <= -40 and tone_gain_db(100) <= -40
    assert tone_gain_db(40, 512, 64) <= -40 and tone_gain_db(40, 200, 64) <= -40  # 8x and 25/8 ratios


def test_decimate_equals_scipy_resample_poly():
    rng = np.random.default_rng(5)
    for n in (1, 7, 61, 10_007):
        for factor in (2, 3, 4, 8):
            x = rng.standard_normal(n).astype(np.float32)
            expected = resample_poly(x, 1, factor, window=antialias_fir(1, factor))
            got = decimate(x, factor)
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, atol=1e-5)


def test_resample_non_integer_ratios_and_upsampling():
    x = np.sin(2 * np.pi * 1.0 * np.arange(200 * 30) / 200)
    assert len(resample(x, 200, 64)) == 64 * 30
    assert len(resample(x[:750], 25, 64)) == 64 * 30
    np.testing.assert_allclose(resample(x, 200, 200), x.astype(np.float32))


def test_hold_resample_never_interpolates_codes():
    codes = np.array([0, 2, 2, 3, -1], dtype=float)
    out = hold_resample(codes, 1, 4)
    assert out.tolist() == [0] * 4 + [2] * 8 + [3] * 4 + [-1] * 4
    assert set(np.unique(hold_resample(codes, 1, 0.5))) <= set(codes)


def test_artefact_mask_flags_flat_runs_rails_and_nan():
    sfreq = 10
    x = np.random.default_rng(0).standard_normal(200)
    x[20:80] = 0.5  # 6 s flat
    x[100:130] = 0.7  # 3 s: too short to be "flat" (FLAT_MIN_S = 5)
    x[150] = 4.0  # at the rail
    x[180] = np.nan
    bad = artefact_mask(x, sfreq, rails=(-4.0, 4.0))
    assert bad[20:80].all() and not bad[100:130].any()
    assert bad[150] and bad[180]
    assert bad.sum() == 60 + 2
    assert artefact_mask(x, sfreq, flat=False).sum() == 1  # trend signals: NaN only


def test_flat_means_relative_to_the_channels_working_range():
    """Tiny real variation is not flat; a constant or quantisation noise on a dead lead is, even
    when the lead is off for most of the night."""
    rng = np.random.default_rng(5)
    quiet = rng.normal(0, 1e-3, 128 * 120)  # a channel whose real variation is tiny everywhere
    assert not flat_seconds(quiet, 128).any()
    night = rng.normal(0, 20, 128 * 600)
    night[: 128 * 500] = np.round(rng.normal(0, 0.004, 128 * 500), 2)  # off for 500 s: +-1 LSB of 0.01 uV
    flat = flat_seconds(night, 128)
    assert flat[:500].all() and not flat[500:].any()
    breathing = np.sin(2 * np.pi * 0.25 * np.arange(32 * 120) / 32)
    breathing[32 * 40 : 32 * 70] *= 0.03  # an apnea keeps a few % of the breathing amplitude: not flat
    assert not flat_seconds(breathing, 32).any()


def test_flat_stretch_is_flagged_identically_by_loader_and_quality(tmp_path):
    """The loader's artefact mask (z-score statistics, preflight warning) and the detectors'
    quality segments find the same flat seconds in a file."""
    import mne

    from sleeplm.io.reader import load_recording
    from sleeplm.measure.quality import artefact_segments
    from test_io import eeg_like, write_psg

    def lead_off(n, sfreq, rng):
        x = eeg_like(n, sfreq, rng)
        x[int(40.5 * sfreq) : int(100.25 * sfreq)] = 3.0  # lead off from 40.5 s to 100.25 s
        return x

    path = tmp_path / "lead_off.edf"
    write_psg(path, [("C3-M2", 256, "uV", lead_off), ("C4-M1", 256, "uV", eeg_like)], minutes=3)
    rec = load_recording(path)
    info = rec.channels[CANONICAL_CHANNELS.index("EEG_C3_A2")]
    data = mne.io.read_raw_edf(path, verbose="error").get_data(picks=["C3-M2"], units="uV")[0]  # the file's samples
    loader_bad = artefact_mask(data, 256)
    loader_seconds = set(np.flatnonzero(loader_bad.reshape(-1, 256).all(axis=1)).tolist())
    segments = artefact_segments(rec, ["EEG_C3_A2"])
    flat = segments[segments.problem == "flat"]
    quality_seconds = {s for row in flat.itertuples() for s in range(int(row.start_s), int(row.end_s))}
    assert loader_seconds == quality_seconds == set(range(41, 100))
    assert "flat for 33% of the recording" in info.warnings


def test_robust_scale_ignores_flat_and_clipped_stretches():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(60_000) * 20.0
    x[:20_000] = 0.0  # a third of the night disconnected
    x[30_000:33_000] = 500.0  # a clipped stretch at the rail
    bad = artefact_mask(x, 64, rails=(-500, 500))
    center, scale = robust_center_scale(x, bad)
    assert scale == pytest.approx(20.0, rel=0.05) and abs(center) < 1.0
    naive_scale = robust_center_scale(x)[1]
    assert naive_scale < 15.0  # without the mask the flat third shrinks the scale
    z = zscore_night(x, bad)
    good = z[~bad]
    assert np.std(good) == pytest.approx(1.0, abs=0.05)
    assert np.abs(z).max() <= Z_CLIP


def test_zscore_night_flat_channel_is_zeros():
    assert not zscore_night(np.full(1000, 3.0)).any()
    assert robust_center_scale(np.full(10, np.nan)) == (pytest.approx(np.nan, nan_ok=True), 0.0)


def test_zscore_per_epoch():
    rng = np.random.default_rng(2)
    epochs = rng.standard_normal((3, 1920)) * [[1.0], [50.0], [0.0]] + 7.0
    z = zscore_per_epoch(epochs)
    np.testing.assert_allclose(z[:2].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(z[:2].std(axis=1), 1, atol=1e-4)
    assert not z[2].any()  # a flat epoch carries no information: zeros, not noise


def test_to_epochs_drops_the_partial_tail():
    x = np.arange(1920 * 2 + 100, dtype=np.float32)
    e = to_epochs(x, 2)
    assert e.shape == (2, 1920) and e[1, 0] == 1920
    with pytest.raises(ValueError):
        to_epochs(x, 3)


def test_channel_warnings():
    x = np.random.default_rng(3).standard_normal(1000) * 20
    x[:200] = 0.0
    x[200:230] = 100.0
    bad = artefact_mask(x, 10, rails=(-100, 100))
    warnings = channel_warnings("EEG_C3_A2", x, bad, 20.0, "uV", rails=(-100, 100))
    assert any(w.startswith("clipped: 3%") for w in warnings)
    assert any(w.startswith("flat for 20%") for w in warnings)
    assert channel_warnings("EEG_C3_A2", x, bad, 2e-5, "uV")[-1].startswith("implausible amplitude")
    assert "not a voltage" in channel_warnings("EMG_Chin", x, bad, 20.0, "%")[-1]
    nan = np.full(100, np.nan)
    nan[:10] = 1
    assert channel_warnings("ECG", nan, np.isnan(nan), 0.0, "uV")[0].startswith("mostly NaN (90%")
    assert channel_warnings("SpO2", np.full(100, 0.95), np.zeros(100, bool), 0.0, "%")[0].startswith("implausible")


def test_usable_mean_sd_leaves_out_flat_clipped_and_pop_samples():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(64_000) * 30.0 + 5.0
    x[:10_000] = 0.0  # disconnected
    x[20_000:20_300] = 500.0  # at the rail
    x[30_000:30_020] = 5_000.0  # a pop far beyond the clipping bound
    bad = artefact_mask(x, 64, rails=(-500, 500))
    mean, sd = usable_mean_sd(x, bad)
    assert mean == pytest.approx(5.0, abs=0.5) and sd == pytest.approx(30.0, rel=0.02)
    z = zscore_night(x, bad)
    usable = np.ones(x.size, dtype=bool)
    usable[:10_000] = usable[20_000:20_300] = usable[30_000:30_020] = False
    assert abs(z[usable].mean()) < 0.05 and z[usable].std() == pytest.approx(1.0, abs=0.02)
    assert np.abs(z).max() == Z_CLIP  # the pop is clipped at the stated bound


@pytest.fixture(scope="module")
def zscored_night(tmp_path_factory):
    """A 1-h simulated night with REM (saccades) loaded with each night-wide normalisation, and its truth."""
    from sleeplm.io.reader import load_recording
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    path = write_night(simulate_night(1.0, seed=0, severity="moderate", sfreq=128),
                       tmp_path_factory.mktemp("z") / "night.edf")
    return {norm: load_recording(path, normalization=norm) for norm in ("night_zscore", "night_robust")}, load_truth(path)


@pytest.mark.parametrize("channel", ["ECG", "ABD", "THX", "AF", "EOG_Left", "EOG_Right", "EEG_C3_A2", "EEG_C4_A1",
                                     "EMG_Chin"])
def test_default_normalisation_is_sleeplms_zscore_over_usable_epochs(zscored_night, channel):
    from sleeplm.io.recording import CANONICAL_CHANNELS

    recs, truth = zscored_night
    assert (truth.hypnogram == "R").sum() >= 10  # the EOG carries REM saccades
    rec = recs["night_zscore"]
    assert rec.normalization == "night_zscore"
    usable = np.ones(rec.n_epochs, dtype=bool)
    for row in truth.events[truth.events.kind == "artefact"].itertuples():
        if channel in row.channel.split(","):
            usable[int(row.start_s // 30) : int(row.end_s // 30) + 1] = False
    z = rec.epochs[usable, CANONICAL_CHANNELS.index(channel)]
    assert abs(z.mean()) < 0.05 and 0.9 <= z.std() <= 1.1, (z.mean(), z.std())
    assert np.abs(rec.epochs[:, CANONICAL_CHANNELS.index(channel)]).max() <= Z_CLIP
    # The robust variant stays available by name (its scale is the IQR's, so its SD is not 1).
    assert recs["night_robust"].normalization == "night_robust"
