"""Loading real EDF/EDF+/BDF files and tensors written here: shapes, rates, units, z-scores, clocks."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

import edfio
import mne
import numpy as np
import pytest
import torch

from sleeplm import load_recording as package_load_recording
from cli import main as cli_main
from sleeplm.errors import AnnotationFileError, CorruptRecordingError
from sleeplm.io.reader import load_recording, preflight_table, read_edf_header
from sleeplm.io.recording import CANONICAL_CHANNELS, EPOCH_SAMPLES

START = datetime.time(23, 15, 30)


def eeg_like(n: int, sfreq: float, rng, amplitude_uv: float = 30.0) -> np.ndarray:
    """10-Hz rhythm plus broadband noise, in uV."""
    t = np.arange(n) / sfreq
    return amplitude_uv * (np.sin(2 * np.pi * 10 * t) + 0.5 * rng.standard_normal(n))


def write_psg(path, channels, minutes: float = 3.0, start=START, annotations=(), patient=None, recording=None):
    """Write an EDF+ with edfio. `channels`: (label, sfreq, unit, values) where values is an array
    or a function (n_samples, sfreq, rng) -> array. Returns the written arrays by label."""
    rng = np.random.default_rng(0)
    signals, written = [], {}
    for label, sfreq, unit, values in channels:
        n = int(round(minutes * 60 * sfreq))
        data = np.asarray(values(n, sfreq, rng) if callable(values) else values, dtype=float)
        margin = max(0.1 * float(data.max() - data.min()), 1.0)  # keep samples off the rails
        low, high = float(data.min()) - margin, float(data.max()) + margin
        signals.append(edfio.EdfSignal(data, sampling_frequency=sfreq, label=label, physical_dimension=unit,
                                       physical_range=(low, high)))
        written[label] = data
    edfio.Edf(
        signals, starttime=start, annotations=[edfio.EdfAnnotation(*a) for a in annotations],
        patient=patient, recording=recording,
    ).write(path)
    return written


def positions(n, sfreq, rng, codes=(0, 1, 2, 3)):
    return np.repeat(codes, int(np.ceil(n / len(codes))))[:n].astype(float)


AASM = [
    ("ECG", 256, "mV", lambda n, f, r: 0.8 * np.sin(2 * np.pi * 1.1 * np.arange(n) / f) + 0.05 * r.standard_normal(n)),
    ("Abdomen", 32, "uV", eeg_like),
    ("Thorax", 32, "uV", eeg_like),
    ("Airflow", 32, "uV", eeg_like),
    ("E1-M2", 256, "uV", eeg_like),
    ("E2-M1", 256, "uV", eeg_like),
    ("C3-M2", 256, "uV", eeg_like),
    ("C4-M1", 256, "uV", eeg_like),
    ("Chin1-Chin2", 256, "uV", eeg_like),
    ("Position", 1, "", positions),
    ("SpO2", 1, "%", lambda n, f, r: np.round(95 + 2 * np.sin(np.arange(n) / 20.0), 1)),
    ("Pulse", 1, "bpm", lambda n, f, r: 60 + 5 * np.sin(np.arange(n) / 30.0)),
    ("Nasal Pressure", 32, "cmH2O", lambda n, f, r: np.sin(2 * np.pi * 0.25 * np.arange(n) / f)),
    ("Snore", 128, "uV", eeg_like),
]


@pytest.fixture(scope="module")
def aasm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("aasm") / "JaneDoe_MRN12345.edf"
    written = write_psg(
        path, AASM,
        annotations=[(0, 30, "Sleep stage W"), (30, 30, "Sleep stage N1"), (60, 60, "Sleep stage 2"),
                     (120, 30, "Sleep stage R"), (95.5, 12, "Obstructive Apnea"), (130, 3, "Arousal")],
        patient=edfio.Patient(name="Jane_Doe", code="MRN12345", birthdate=datetime.date(1960, 3, 4), sex="F"),
        recording=edfio.Recording(startdate=datetime.date(2024, 5, 17)),
    )
    return path, written


def test_aasm_edf_loads_every_channel_in_sleeplm_order(aasm_file):
    path, _ = aasm_file
    rec = load_recording(path)
    assert rec.epochs.shape == (6, 10, EPOCH_SAMPLES) and rec.epochs.dtype == np.float32
    assert rec.channel_present.all()
    sources = {c.canonical: c.source for c in rec.channels}
    assert sources == {
        "ECG": "ECG", "ABD": "Abdomen", "THX": "Thorax", "AF": "Airflow", "EOG_Left": "E1-M2",
        "EOG_Right": "E2-M1", "EEG_C3_A2": "C3-M2", "EEG_C4_A1": "C4-M1", "EMG_Chin": "Chin1-Chin2",
        "POS": "Position",
    }
    assert [c.canonical for c in rec.channels] == list(CANONICAL_CHANNELS)
    assert rec.source_format == "EDF+" and rec.normalization == "night_zscore"
    assert package_load_recording(path).content_digest() == rec.content_digest()


def test_signal_rates_and_units(aasm_file):
    path, written = aasm_file
    rec = load_recording(path)
    rates = {name: s.sfreq for name, s in rec.signals.items()}
    assert rates == {"ECG": 256, "ABD": 32, "THX": 32, "AF": 32, "EOG_Left": 128, "EOG_Right": 128,
                     "EEG_C3_A2": 128, "EEG_C4_A1": 128, "EMG_Chin": 128, "POS": 1, "SpO2": 1, "HR": 1,
                     "Pressure": 32, "Snore": 128}
    for name, signal in rec.signals.items():
        assert len(signal.data) == signal.sfreq * 180, name  # exactly n_epochs * 30 s
    # ECG was written in mV: reported in uV, same samples (EDF 16-bit quantisation aside).
    ecg = rec.signals["ECG"]
    assert ecg.unit == "uV"
    np.testing.assert_allclose(ecg.data, written["ECG"] * 1000, atol=2.0)
    # Slow channels come back sample for sample although mne upsamples them to 256 Hz internally.
    np.testing.assert_allclose(rec.signals["SpO2"].data, written["SpO2"], atol=0.01)
    assert rec.signals["SpO2"].unit == "%" and rec.signals["HR"].unit == "bpm"
    assert rec.signals["Pressure"].unit == "cmH2O"
    np.testing.assert_allclose(rec.signals["THX"].data, written["Thorax"], atol=0.1)


def test_epochs_are_zscored_and_pos_holds_codes(aasm_file):
    rec = load_recording(aasm_file[0])
    robust = load_recording(aasm_file[0], normalization="night_robust")
    for name in ("EEG_C3_A2", "ECG", "THX"):
        row = rec.epochs[:, CANONICAL_CHANNELS.index(name)].ravel()
        assert abs(row.mean()) < 0.05 and abs(row.std() - 1) < 0.1, name
        assert np.abs(row).max() <= 10.0
        row = robust.epochs[:, CANONICAL_CHANNELS.index(name)].ravel()
        q25, median, q75 = np.percentile(row, [25, 50, 75])
        assert abs(median) < 0.05 and abs((q75 - q25) / 1.349 - 1) < 0.05, name
    pos = rec.epochs[:, CANONICAL_CHANNELS.index("POS")]
    assert set(np.unique(pos)) == {0.0, 1.0, 2.0, 3.0}
    assert (pos[0] == 0).all() and (pos[-1] == 3).all()  # not z-scored, held per sample
    assert rec.position_map == "sleeplm"
    assert any("values read as SleepLM codes" in w for w in rec.channels[-1].warnings)


def test_per_epoch_normalization(aasm_file):
    rec = load_recording(aasm_file[0], normalization="per_epoch")
    assert rec.normalization == "per_epoch"
    eeg = rec.epochs[:, CANONICAL_CHANNELS.index("EEG_C3_A2")]
    np.testing.assert_allclose(eeg.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(eeg.std(axis=1), 1, atol=1e-3)


def test_clock_and_reference_scoring(aasm_file):
    rec = load_recording(aasm_file[0])
    assert rec.start_seconds == 23 * 3600 + 15 * 60 + 30
    assert rec.epoch_clock(2) == "23:16:30" and rec.epoch_elapsed(2) == "0h01m00s"
    assert list(rec.reference.stages) == ["W", "N1", "N2", "N2", "R", "?"]
    events = rec.reference.events.set_index("label")
    assert events.loc["Obstructive Apnea", "kind"] == "apnea"
    assert events.loc["Obstructive Apnea", "subtype"] == "obstructive"
    assert events.loc["Obstructive Apnea", "onset_s"] == pytest.approx(95.5)
    assert events.loc["Arousal", "kind"] == "arousal"


def test_no_identifying_data_in_any_field(aasm_file):
    path, _ = aasm_file
    rec = load_recording(path)
    text = repr([getattr(rec, f.name) for f in dataclasses.fields(rec) if f.name != "epochs"]) + rec.describe()
    for secret in ("Jane", "Doe", "MRN12345", "1960", "04-MAR", "2024", "17.05", path.name, path.stem):
        assert secret not in text, secret
    assert rec.content_digest() == hashlib.sha256(rec.epochs.tobytes()).hexdigest()


def test_describe_and_preflight_table(aasm_file):
    rec = load_recording(aasm_file[0])
    table = preflight_table(rec)
    assert list(table["channel"][:10]) == list(CANONICAL_CHANNELS)
    assert set(table["channel"][10:]) == {"SpO2", "HR", "Pressure", "Snore"}
    assert (table["status"][:10] == "present").all()
    text = rec.describe()
    assert "C3-M2" in text and "23:15:30" in text and "very short recording" in text


def test_cli_inspect_prints_the_preflight_report(aasm_file, capsys):
    assert cli_main(["inspect", str(aasm_file[0])]) == 0
    out = capsys.readouterr().out
    assert "EEG_C3_A2" in out and "Chin1-Chin2" in out


def test_monopolar_channels_are_derived(tmp_path):
    path = tmp_path / "mono.edf"
    labels = ["C3", "C4", "M1", "M2", "E1", "E2", "Chin1", "Chin2", "ECG L", "ECG R"]
    written = write_psg(path, [(label, 256, "uV", eeg_like) for label in labels], minutes=1)
    rec = load_recording(path)
    info = {c.canonical: c for c in rec.channels}
    for name, source in [("EEG_C3_A2", "C3 - M2"), ("EEG_C4_A1", "C4 - M1"), ("EOG_Left", "E1 - M2"),
                         ("EOG_Right", "E2 - M1"), ("EMG_Chin", "Chin1 - Chin2"), ("ECG", "ECG L - ECG R")]:
        assert info[name].derived and info[name].source == source
    expected = (written["ECG L"] - written["ECG R"])
    np.testing.assert_allclose(rec.signals["ECG"].data, expected, atol=0.2)
    assert not info["AF"].present and (rec.epochs[:, CANONICAL_CHANNELS.index("AF")] == 0).all()
    assert (rec.epochs[:, CANONICAL_CHANNELS.index("POS")] == -1).all()  # missing position = unknown


def test_sleep_edf_substitutes_are_explicit(tmp_path):
    path = tmp_path / "sc.edf"
    labels = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental", "Event marker"]
    write_psg(path, [(label, 100, "uV", eeg_like) for label in labels], minutes=1)
    rec = load_recording(path)
    info = {c.canonical: c for c in rec.channels}
    assert info["EEG_C3_A2"].substitute and info["EEG_C3_A2"].source == "EEG Fpz-Cz"
    assert any("EEG Fpz-Cz" in w for w in info["EEG_C3_A2"].warnings)
    assert info["EEG_C4_A1"].source == "EEG Pz-Oz" and info["EOG_Left"].source == "EOG horizontal"
    assert info["AF"].source == "Resp oro-nasal" and not info["AF"].substitute
    assert info["EMG_Chin"].source == "EMG submental" and info["EMG_Chin"].original_sfreq == 100
    assert rec.signals["EEG_C3_A2"].sfreq == 100  # below the 128 Hz cap: kept at its own rate
    assert preflight_table(rec).set_index("channel").loc["EEG_C3_A2", "status"] == "substitute"


def test_shhs_position_map_and_mesa_map(tmp_path):
    shhs = tmp_path / "shhs.edf"
    write_psg(shhs, [("EEG(sec)", 125, "uV", eeg_like), ("EEG", 125, "uV", eeg_like),
                     ("THOR RES", 10, "", eeg_like), ("ABDO RES", 10, "", eeg_like),
                     ("POSITION", 1, "", positions)], minutes=1)
    rec = load_recording(shhs)
    assert rec.position_map == "shhs"
    assert not any("assumed" in w for w in rec.channels[-1].warnings)
    assert {c.canonical: c.source for c in rec.channels}["EEG_C3_A2"] == "EEG(sec)"
    assert list(np.unique(rec.signals["POS"].data)) == [0, 1, 2, 3]

    mesa = tmp_path / "mesa.edf"
    write_psg(mesa, [("EEG1", 256, "uV", eeg_like), ("EEG2", 256, "uV", eeg_like), ("EEG3", 256, "uV", eeg_like),
                     ("Pos", 4, "", lambda n, f, r: positions(n, f, r, codes=(0, 1, 2, 3, 4)))], minutes=1)
    rec = load_recording(mesa)
    assert rec.position_map == "mesa"
    pos = rec.signals["POS"].data
    # MESA/Compumedics: 0 right, 1 supine, 2 left, 3 prone, 4 upright -> SleepLM 0, 2, 1, 3, 4
    assert [pos[i * len(pos) // 5] for i in range(5)] == [0, 2, 1, 3, 4]
    info = {c.canonical: c for c in rec.channels}
    assert info["EEG_C4_A1"].source == "EEG3" and info["EEG_C3_A2"].substitute


def test_user_channel_map_and_position_map(tmp_path):
    path = tmp_path / "odd.edf"
    write_psg(path, [("Kanal 1", 128, "uV", eeg_like), ("Lage", 1, "", positions)], minutes=1)
    rec = load_recording(path, channel_map={"EEG_C3_A2": "Kanal 1", "POS": "Lage"},
                         position_map={0: "Supine", 1: "Left", 2: "Right"})
    assert rec.channels[CANONICAL_CHANNELS.index("EEG_C3_A2")].source == "Kanal 1"
    assert rec.position_map == "custom"
    assert list(rec.signals["POS"].data[[0, 20, 40, 59]]) == [2, 1, 0, -1]
    assert any("do not know" in w or "does not know" in w for w in rec.channels[-1].warnings)


def test_flat_channel_is_missing_with_warning(tmp_path):
    path = tmp_path / "flat.edf"
    write_psg(path, [("C3-M2", 256, "uV", eeg_like), ("C4-M1", 256, "uV", lambda n, f, r: np.zeros(n))], minutes=1)
    rec = load_recording(path)
    c4 = rec.channels[CANONICAL_CHANNELS.index("EEG_C4_A1")]
    assert not c4.present and any("flat" in w for w in c4.warnings)
    assert (rec.epochs[:, CANONICAL_CHANNELS.index("EEG_C4_A1")] == 0).all()
    assert "EEG_C4_A1" not in rec.signals and rec.channel_present[CANONICAL_CHANNELS.index("EEG_C3_A2")]


def test_implausible_units_are_flagged(tmp_path):
    path = tmp_path / "units.edf"
    # EEG written as if in volts but labelled uV: robust SD ~ 3e-5 uV.
    write_psg(path, [("C3-M2", 256, "uV", lambda n, f, r: eeg_like(n, f, r) * 1e-6),
                     ("SpO2", 1, "%", lambda n, f, r: 0.95 + 0.01 * r.standard_normal(n))], minutes=1)
    rec = load_recording(path)
    assert any("implausible amplitude" in w for w in rec.channels[CANONICAL_CHANNELS.index("EEG_C3_A2")].warnings)
    assert any("implausible values" in w for w in rec.extra_channels[0].warnings)


def test_bdf_through_mne(tmp_path):
    path = tmp_path / "night.bdf"
    info = mne.create_info(["C3-M2", "EKG"], 128.0, ch_types="eeg")
    rng = np.random.default_rng(1)
    data = np.stack([eeg_like(128 * 90, 128, rng), eeg_like(128 * 90, 128, rng) * 10]) * 1e-6  # volts
    mne.export.export_raw(path, mne.io.RawArray(data, info, verbose="error"), fmt="bdf", verbose="error")
    rec = load_recording(path)
    assert rec.source_format.startswith("BDF") and rec.n_epochs == 3
    assert rec.channel_present[CANONICAL_CHANNELS.index("ECG")]
    np.testing.assert_allclose(rec.signals["EEG_C3_A2"].data, data[0] * 1e6, atol=0.05)
    assert read_edf_header(path).file_type == "BDF"


def test_ready_tensors_pt_and_npy(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 10, EPOCH_SAMPLES)).astype(np.float32)
    x[:, 9] = 2.0
    x[:, 3] = 0.0  # AF missing
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    np.save(tmp_path / "x.npy", x)
    for name in ("x.pt", "x.npy"):
        rec = load_recording(tmp_path / name)
        np.testing.assert_array_equal(rec.epochs, x)
        assert rec.source_format == "tensor" and rec.normalization == "as_given"
        assert list(rec.channel_present) == [True, True, True, False] + [True] * 6
        assert (rec.signals["POS"].data == 2).all()


def test_mixed_rates_that_do_not_divide(tmp_path):
    path = tmp_path / "mixed.edf"
    written = write_psg(path, [("C3-M2", 200, "uV", eeg_like), ("ECG", 256, "uV", eeg_like),
                               ("SpO2", 3, "%", lambda n, f, r: 95 + r.standard_normal(n))], minutes=1)
    rec = load_recording(path)
    info = {c.canonical: c for c in rec.channels + rec.extra_channels}
    assert info["EEG_C3_A2"].original_sfreq == 200 and info["SpO2"].original_sfreq == 3
    assert rec.signals["EEG_C3_A2"].sfreq == 128 and len(rec.signals["EEG_C3_A2"].data) == 128 * 60
    # 10-Hz rhythm survives resampling from the file's 200 Hz to 128 Hz.
    eeg = rec.signals["EEG_C3_A2"].data
    spectrum = np.abs(np.fft.rfft(eeg))
    assert np.argmax(spectrum) == 10 * 60
    assert np.corrcoef(rec.signals["SpO2"].data[10:-10], written["SpO2"][10:-10])[0, 1] > 0.99


def test_degenerate_unused_channel_does_not_reject_the_file(tmp_path):
    path = tmp_path / "marker.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like), ("Event marker", 1, "", np.zeros(60))], minutes=1)
    raw = bytearray(path.read_bytes())
    n_signals = int(raw[252:256])
    # Give "Event marker" (signal 2) physical min == max, as some exports do for unused channels.
    for offset in (104, 112):
        at = 256 + offset * n_signals + 8 * 1
        raw[at : at + 8] = b"0".ljust(8)
    path.write_bytes(bytes(raw))
    rec = load_recording(path)
    assert rec.channel_present[CANONICAL_CHANNELS.index("EEG_C3_A2")]


def test_trend_signals_are_not_flat_artefacts(tmp_path):
    path = tmp_path / "trend.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like), ("LIGHT", 1, "", np.zeros(60)),
                     ("SpO2", 1, "%", np.repeat([97.0, 98.0], 30)), ("HR", 1, "bpm", np.full(60, 62.0))], minutes=1)
    rec = load_recording(path)
    info = {c.canonical: c for c in rec.extra_channels}
    assert set(rec.signals) >= {"Light", "SpO2"}  # lights off all night is data, not a dead sensor
    assert info["Light"].warnings == [] and info["SpO2"].warnings == []
    # A heart rate constant for the whole recording is a dead sensor: flagged and excluded.
    assert "HR" not in rec.signals and not info["HR"].present
    assert info["HR"].warnings == ["constant at 62 bpm for the whole recording (sensor off or disconnected): "
                                   "excluded from every statistic"]


def test_position_angles_are_recognised_without_a_vendor(tmp_path):
    path = tmp_path / "angles.edf"
    angles = np.repeat([3.0, 88.0, -92.0, 178.0], 15) + np.tile(np.linspace(-2, 2, 15), 4)
    write_psg(path, [("C3-M2", 128, "uV", eeg_like), ("Position", 1, "deg", angles)], minutes=1)
    rec = load_recording(path)
    assert rec.position_map == "nox"
    assert list(rec.signals["POS"].data[[0, 20, 35, 50]]) == [2, 1, 0, 3]
    assert any("roll angles" in w for w in rec.channels[-1].warnings)


def test_no_position_channel_means_no_position_map(tmp_path):
    path = tmp_path / "nopos.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like)], minutes=1)
    assert load_recording(path).position_map is None


@pytest.mark.parametrize("montage", ["aasm", "monopolar", "shhs", "mesa", "nox", "sleep-edf"])
def test_simulator_nights_load_with_their_vendor_maps(tmp_path, montage):
    from sleeplm.synthetic import load_truth, simulate_night, write_night
    from sleeplm.synthetic.montages import POSITION_MAP_NAMES

    night = simulate_night(duration_h=0.25, seed=2, montage=montage, sfreq=64, annotations=True)
    path = write_night(night, tmp_path / f"{montage}.edf")
    rec, truth = load_recording(path), load_truth(path)
    assert rec.position_map == POSITION_MAP_NAMES[montage]
    assert rec.clock_at(0) == truth.start_clock
    assert rec.channel_present.sum() == (5 if montage == "sleep-edf" else 10)
    assert (rec.reference.stages == truth.hypnogram[: rec.n_epochs]).all()
    scored = truth.events[truth.events["kind"] != "artefact"]
    counts = rec.reference.events.groupby(["kind", "subtype"]).size()
    for kind in ("apnea", "hypopnea"):
        assert counts[kind].sum() == (scored["kind"] == kind).sum()


def test_samples_read_from_the_records_equal_mne_and_edfio(tmp_path):
    """The loader reads samples itself (float32, each channel at its own rate); they must be the
    values mne and edfio decode, for an asymmetric physical range, mV units and odd rates."""
    path = tmp_path / "asym.edf"
    written = write_psg(path, [("ECG", 256, "mV", lambda n, f, r: 0.5 + r.standard_normal(n)),
                               ("SpO2", 3, "%", lambda n, f, r: 90 + 3 * r.standard_normal(n)),
                               ("C3-M2", 200, "uV", eeg_like)], minutes=1)
    rec = load_recording(path)
    mne_ecg_volts = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data(picks=["ECG"])[0]
    assert rec.signals["ECG"].sfreq == 256 and rec.signals["ECG"].unit == "uV"
    np.testing.assert_allclose(rec.signals["ECG"].data, mne_ecg_volts * 1e6, rtol=1e-6, atol=1e-2)
    edfio_spo2 = edfio.read_edf(path).signals[1].data
    np.testing.assert_allclose(rec.signals["SpO2"].data, edfio_spo2, rtol=1e-6)
    np.testing.assert_allclose(rec.signals["SpO2"].data, written["SpO2"], atol=0.01)  # 16-bit resolution


def test_bdf_samples_equal_mne(tmp_path):
    path = tmp_path / "night.bdf"
    info = mne.create_info(["ECG"], 256.0, ch_types="ecg")
    volts = np.random.default_rng(4).standard_normal((1, 256 * 60)) * 1e-3 - 2e-4
    mne.export.export_raw(path, mne.io.RawArray(volts, info, verbose="error"), fmt="bdf", verbose="error")
    expected = mne.io.read_raw_bdf(path, preload=True, verbose="error").get_data()[0] * 1e6
    np.testing.assert_allclose(load_recording(path).signals["ECG"].data, expected, rtol=1e-6, atol=1e-2)


def test_used_channel_with_degenerate_digital_range_is_a_clear_error(tmp_path):
    path = tmp_path / "digital.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like)], minutes=1)
    raw = bytearray(path.read_bytes())
    n_signals = int(raw[252:256])
    for offset in (120, 128):  # digital min and max of signal 1 both 0
        at = 256 + offset * n_signals
        raw[at : at + 8] = b"0".ljust(8)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecordingError, match="digital minimum"):
        load_recording(path)


def write_hypnogram(path, start, stages):
    """A Sleep-EDF style annotation-only EDF+ (record duration 0): (onset_s, duration_s, label)."""
    edfio.Edf([], starttime=start, annotations=[edfio.EdfAnnotation(*s) for s in stages]).write(path)


SLEEP_EDF = [("EEG Fpz-Cz", 100, "uV", eeg_like), ("EEG Pz-Oz", 100, "uV", eeg_like),
             ("EOG horizontal", 100, "uV", eeg_like)]


def test_sleep_edf_hypnogram_beside_the_psg_is_found_and_aligned(tmp_path):
    psg = tmp_path / "SC4001E0-PSG.edf"
    write_psg(psg, SLEEP_EDF, minutes=4, start=datetime.time(22, 0, 0))
    # The hypnogram starts 60 s after the PSG: its onsets must shift by 2 epochs.
    write_hypnogram(tmp_path / "SC4001EC-Hypnogram.edf", datetime.time(22, 1, 0),
                    [(0, 60, "Sleep stage W"), (60, 30, "Sleep stage 1"), (90, 30, "Sleep stage R")])
    rec = load_recording(psg)
    assert rec.reference.stages.tolist() == ["?", "?", "W", "W", "N1", "R", "?", "?"]
    assert any("hypnogram file beside" in w for w in rec.warnings)
    assert "SC4001" not in repr(rec.warnings)  # file names never enter the record


def test_explicit_annotations_file_edf_or_csv(tmp_path):
    psg = tmp_path / "night.edf"
    write_psg(psg, SLEEP_EDF, minutes=2, start=datetime.time(22, 0, 0))
    assert load_recording(psg).reference is None  # no annotations, no Sleep-EDF name: nothing guessed
    hyp = tmp_path / "scoring.edf"
    write_hypnogram(hyp, datetime.time(22, 0, 0), [(0, 120, "Sleep stage 2")])
    assert load_recording(psg, annotations=hyp).reference.stages.tolist() == ["N2"] * 4
    by_epoch = tmp_path / "stages.csv"
    by_epoch.write_text("stage\nW\nN1\nN2\nN3\n")
    assert load_recording(psg, annotations=by_epoch).reference.stages.tolist() == ["W", "N1", "N2", "N3"]
    events = tmp_path / "events.csv"
    events.write_text("onset,duration,description\n0,60,Sleep stage R\n35.5,12,Obstructive Apnea\n")
    ref = load_recording(psg, annotations=events).reference
    assert ref.stages.tolist() == ["R", "R", "?", "?"]
    assert ref.events.iloc[0][["onset_s", "kind"]].tolist() == [35.5, "apnea"]


@pytest.mark.parametrize("content, name, match", [
    (None, "missing.csv", "does not exist"),
    ("a,b\n1,2\n", "bad.csv", "needs onset, duration, description"),
    ("x", "scoring.txt", "not supported"),
    ("not an edf", "scoring.edf", "not a readable EDF"),
])
def test_bad_annotations_file_is_a_clear_error(tmp_path, content, name, match):
    psg = tmp_path / "night.edf"
    write_psg(psg, SLEEP_EDF, minutes=1)
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnnotationFileError, match=match):
        load_recording(psg, annotations=path)


@pytest.mark.parametrize(("allotted", "affinity", "threads"), [
    ("1", 2, 1), ("8", 2, 2), (None, 1, 1), (None, 4, 2), ("junk", 1, 1), ("0", 2, 2), ("2,1", 1, 1),
])
def test_loader_threads_follow_the_cpu_allotment(monkeypatch, allotted, affinity, threads):
    from sleeplm.io import reader

    if allotted is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", allotted)
    monkeypatch.setattr(reader.os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert reader._load_threads() == threads


def test_one_cpu_allotment_loads_the_same_night_on_one_thread(aasm_file, monkeypatch):
    from sleeplm.io import reader

    pools = []

    class RecordingPool(reader.ThreadPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(reader, "ThreadPoolExecutor", RecordingPool)
    monkeypatch.setattr(reader.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = load_recording(aasm_file[0])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two = load_recording(aasm_file[0])
    assert pools == [1, 2]
    assert np.array_equal(one.epochs, two.epochs)
    assert all(np.array_equal(one.signals[name].data, two.signals[name].data) for name in one.signals)
