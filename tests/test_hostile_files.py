"""Hostile EDF/BDF headers and odd rates, written byte by byte: a clear error or a correct result.

Complements test_bad_input.py (empty, random, truncated, wrong type, EDF+D gaps, tensors): here
the header fields a damaged or unusual exporter writes (nan/inf numbers, an inverted physical
range, blank labels, an out-of-range start time, an annotation-only file) and trend signals
stored at rates other than the kept one (SpO2 at 256 Hz or 0.1 Hz).
"""

from __future__ import annotations

import numpy as np
import pytest

from sleeplm.errors import ChannelMappingError, CorruptRecordingError, NotARecordingError
from sleeplm.io.channels import map_channels
from sleeplm.io.preprocess import interpolate, resample
from sleeplm.io.reader import load_recording


def _field(value, width: int) -> bytes:
    return str(value).encode("latin-1")[:width].ljust(width)


def write_edf(path, signals, n_records, record_s=1.0, reserved="", start_time="23.00.00", tal=None):
    """An EDF written byte by byte, so that any header field can hold anything.

    `signals`: dicts with label, spr, pmin, pmax, dmin, dmax, unit and data (function of the
    record index returning `spr` digital values). `tal`: (bytes per record, function of the record
    index returning the annotation signal's text), added as an "EDF Annotations" signal.
    """
    signals = list(signals)
    if tal is not None:
        signals.append(dict(label="EDF Annotations", spr=tal[0] // 2, pmin=-1, pmax=1, dmin=-32768, dmax=32767, unit=""))
    head = b"0       " + _field("X X X X", 80) + _field("Startdate X X X X", 80) + _field("01.01.85", 8)
    head += _field(start_time, 8) + _field(256 * (len(signals) + 1), 8) + _field(reserved, 44)
    head += _field(n_records, 8) + _field(record_s, 8) + _field(len(signals), 4)
    for key, width in [("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8),
                       ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32)]:
        head += b"".join(_field(s.get(key, ""), width) for s in signals)
    body = []
    for r in range(n_records):
        for s in signals:
            if s["label"] == "EDF Annotations":
                body.append(tal[1](r).encode("latin-1").ljust(tal[0], b"\x00"))
            else:
                body.append(np.asarray(s["data"](r), dtype="<i2").tobytes())
    path.write_bytes(head + b"".join(body))
    return path


def eeg(label="EEG C3-A2", spr=128, pmin=-500, pmax=500):
    rng = np.random.default_rng(1)
    return dict(label=label, spr=spr, unit="uV", pmin=pmin, pmax=pmax, dmin=-32768, dmax=32767,
                data=lambda r: rng.normal(0, 2000, spr).clip(-32768, 32767))


def spo2(spr, values):
    """SpO2 in 0.1 % steps (digital 0..1000 = 0..100 %); `values(r)` gives the record's % value."""
    return dict(label="SpO2", spr=spr, unit="%", pmin=0, pmax=100, dmin=0, dmax=1000,
                data=lambda r: np.full(spr, round(values(r) * 10)))


@pytest.mark.parametrize("field, kwargs", [
    ("duration of a data record", dict(record_s="inf")),
    ("physical minimum", dict(signals=[eeg(pmin="nan")])),
    ("physical maximum", dict(signals=[eeg(pmax="inf")])),
])
def test_nan_or_inf_in_a_header_number_is_an_error(tmp_path, field, kwargs):
    """float() reads 'nan' and 'inf': such a header crashed the loader or gave a channel of NaN."""
    kwargs = {"signals": [eeg()], "n_records": 60, **kwargs}
    path = write_edf(tmp_path / "x.edf", **kwargs)
    with pytest.raises(CorruptRecordingError, match=f"'{field}' holds .*not a number"):
        load_recording(path)


def test_inverted_physical_range_is_read_not_dropped_as_clipped(tmp_path):
    """EDF allows physical minimum > maximum (an inverted channel); it was read as 100 % clipped."""
    normal = load_recording(write_edf(tmp_path / "a.edf", [eeg()], 120))
    inverted = load_recording(write_edf(tmp_path / "b.edf", [eeg(pmin=500, pmax=-500)], 120))
    channel = {c.canonical: c for c in inverted.channels}["EEG_C3_A2"]
    assert channel.present and not any("clipped" in w for w in channel.warnings)
    np.testing.assert_allclose(inverted.signals["EEG_C3_A2"].data, -normal.signals["EEG_C3_A2"].data, atol=0.05)


def test_blank_or_garbage_label_never_stands_in_for_a_channel(tmp_path):
    """A label that normalises to nothing ('', '\\x00\\x00', 'ÿþ') was substituted for every missing channel."""
    sources, _ = map_channels(["EEG C3-A2", "", "\x00\x00\x00", "ÿþ", "ECG"])
    assert {label for s in sources.values() for label in s.labels} <= {"EEG C3-A2", "ECG"}
    rec = load_recording(write_edf(tmp_path / "x.edf", [eeg(), eeg(label="\x00\x00\x00")], 60))
    assert [c.canonical for c in rec.channels if c.present] == ["EEG_C3_A2", "EEG_C4_A1"]
    assert "AF" not in rec.signals and "ABD" not in rec.signals


@pytest.mark.parametrize("spr, record_s", [(256, 1.0), (10, 1.0), (1, 10.0), (1, 2.0)])
def test_spo2_at_any_rate_keeps_its_values(tmp_path, spr, record_s):
    """SpO2 at 256 Hz read 48 % in its first second (zeros past the ends of the resampling
    filter), and at 0.1 Hz the filter rang 6 % below the lowest reading: invented nadirs."""
    n_records = int(600 / record_s)
    path = write_edf(tmp_path / "x.edf", [eeg(spr=int(128 * record_s)), spo2(spr, lambda r: 93 + (r * record_s // 30) % 4)],
                     n_records, record_s=record_s)
    data = load_recording(path).signals["SpO2"].data
    assert 92.95 <= data.min() and data.max() <= 96.05
    assert data[:4].min() > 92.95 and data[-4:].min() > 92.95


def test_constant_slow_spo2_is_still_a_dead_sensor(tmp_path):
    """A constant 0.1-Hz SpO2 was upsampled with ringing, so it no longer looked constant."""
    path = write_edf(tmp_path / "x.edf", [eeg(spr=1280), spo2(1, lambda r: 95)], 60, record_s=10)
    rec = load_recording(path)
    assert "SpO2" not in rec.signals
    assert any("constant at 95 %" in w for c in rec.extra_channels for w in c.warnings)


def test_resampling_holds_the_end_values():
    night = np.full(600 * 256, 95.0, dtype=np.float32)
    for rate_in, rate_out in [(256, 4), (256, 64), (100, 64), (3, 1)]:
        out = resample(night[: 600 * rate_in], rate_in, rate_out)
        np.testing.assert_allclose(out, 95.0, rtol=2e-3)  # polyphase ripple; the ends fell to ~50 %
    assert interpolate(np.array([95.0, 90.0]), 0.1, 1.0).min() == 90.0


def test_annotation_only_file_says_it_is_a_scoring_file(tmp_path):
    path = write_edf(tmp_path / "x.edf", [], 1, record_s=0, reserved="EDF+C",
                     tal=(60, lambda r: "+0\x14\x14\x00+0\x1530\x14Sleep stage W\x14\x00"))
    with pytest.raises(NotARecordingError, match="only annotations, no signals: it is a scoring file"):
        load_recording(path)


def test_start_time_out_of_range_names_the_field(tmp_path):
    path = write_edf(tmp_path / "x.edf", [eeg()], 60, start_time="25.61.99")
    with pytest.raises(CorruptRecordingError, match="start time field holds '25.61.99'"):
        load_recording(path)


def test_edf_plus_d_with_an_unreadable_record_time_stamp(tmp_path):
    """float('nan') parsed, and a NaN step compared as 'no gap': the file was read as continuous."""
    path = write_edf(tmp_path / "x.edf", [eeg()], 60, reserved="EDF+D",
                     tal=(30, lambda r: f"+{'nan' if r == 5 else r}\x14\x14\x00"))
    with pytest.raises(CorruptRecordingError, match="time stamps are unreadable"):
        load_recording(path)


def test_a_refused_second_upload_leaves_the_first_night_and_its_file(small_edf, tmp_path):
    """The refused file was moved over the first night's file (same neutral name): a later
    channel-map reload would have read it while the page still showed the first night."""
    import gradio as gr
    from test_app import load, upload_copy

    import app

    bs = load(upload_copy(small_edf, tmp_path / "up1"), tmp_path / "sessions")[0]
    try:
        first = bs.night.night
        broken = tmp_path / "up2" / "broken.edf"
        broken.parent.mkdir()
        broken.write_bytes(small_edf.read_bytes()[:-1000])  # truncated
        with pytest.raises(gr.Error) as info:
            list(app.load_night(str(broken), bs, None, None, root=tmp_path / "sessions", llm_factory=lambda: None))
        assert "truncated" in info.value.message and "night loaded before is still" in info.value.message
        assert bs.night.night is first and bs.recording_path == bs.workdir / "recording.edf"
        assert bs.recording_path.read_bytes() == small_edf.read_bytes()
        assert sorted(p.name for p in bs.workdir.iterdir() if p.is_file()) == ["recording.edf"]
    finally:
        bs.close()


def test_control_bytes_in_labels_never_reach_a_message(tmp_path):
    """A label such as ESC]0;...BEL would have been printed as is by `inspect` (a terminal escape)."""
    path = write_edf(tmp_path / "x.edf", [eeg(label="\x1b]0;pwn\x07"), eeg(label="\x01junk")], 60)
    with pytest.raises(ChannelMappingError) as info:
        load_recording(path)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value) and "?]0;pwn?" in str(info.value)


@pytest.mark.parametrize("n_records, held", [(0, "holds no data after its header"), (-5, "holds 60 complete data records")])
def test_zero_or_negative_number_of_records_says_so(tmp_path, n_records, held):
    """Both read 'the file size does not match its header (0 data bytes, header implies 0)'."""
    path = write_edf(tmp_path / "x.edf", [eeg()], 60 if n_records < 0 else 0)
    raw = bytearray(path.read_bytes())
    raw[236:244] = _field(n_records, 8)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecordingError, match=f"'number of data records' holds {n_records}, and the file {held}"):
        load_recording(path)


@pytest.mark.parametrize("question, tool, words", [
    ("when did respiration look abnormal?", "abnormal_periods", "Apneas and hypopneas could not be measured"),
    ("was my oxygen ever low?", "list_events", "Desaturations could not be measured"),
])
def test_events_a_night_cannot_show_are_never_reported_as_none(tmp_path, question, tool, words):
    """Without airflow (or SpO2) the tools said 'No respiratory events were measured in the whole night'."""
    from assistant.session import NightSession

    session = NightSession(llm="none")
    try:
        session.load(write_edf(tmp_path / "x.edf", [eeg(), spo2(1, lambda r: 0)], 600), stage_cross_check=False)
        turn = session.ask(question)
        call = turn.tool_calls[0]
        assert call["name"] == tool and words in turn.answer and "does not mean there were none" in turn.answer
        assert "No respiratory events" not in turn.answer and "0 desaturation" not in turn.answer
        assert call["result"].get("count", call["result"].get("n_events")) is None
    finally:
        session.close()


def test_zero_physical_range_is_named_not_called_clipped(tmp_path):
    """Physical minimum == maximum scales every sample to one value: it was reported as 'clipped 100 %'."""
    rec = load_recording(write_edf(tmp_path / "z.edf", [eeg(), eeg(label="EEG C4-A1", pmin=100, pmax=100)], 120))
    channel = {c.canonical: c for c in rec.channels}["EEG_C4_A1"]
    assert not channel.present and "EEG_C4_A1" not in rec.signals
    assert channel.warnings == ["zero physical range (header), the channel cannot be read"]
    assert {c.canonical: c for c in rec.channels}["EEG_C3_A2"].present
