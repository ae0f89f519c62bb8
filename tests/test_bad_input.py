"""Every kind of bad upload gets its own RecordingError subclass with a what-to-do message."""

from __future__ import annotations

import os

import mne
import numpy as np
import pytest
import torch
from test_io import eeg_like, write_psg

from cli import main as cli_main
from sleeplm.errors import (
    ChannelMappingError,
    CorruptRecordingError,
    DiscontinuousRecordingError,
    NotARecordingError,
    RecordingError,
    TensorFormatError,
    TooShortError,
)
from sleeplm.io.reader import load_recording, read_edf_header
from sleeplm.io.recording import EPOCH_SAMPLES


@pytest.fixture
def good_edf(tmp_path):
    path = tmp_path / "good.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like), ("ECG", 128, "uV", eeg_like)], minutes=1)
    return path


def patch_header(src, dst, offset: int, text: str):
    """Copy `src` to `dst` with the fixed-header field at `offset` overwritten (space padded)."""
    raw = bytearray(src.read_bytes())
    width = {176: 8, 192: 44, 236: 8, 244: 8, 0: 8}[offset]
    raw[offset : offset + width] = text.encode("latin-1").ljust(width)
    dst.write_bytes(bytes(raw))
    return dst


def write_bdf(path, seconds: int = 60):
    info = mne.create_info(["C3-M2"], 128.0, ch_types="eeg")
    data = eeg_like(128 * seconds, 128, np.random.default_rng(0))[None] * 1e-6
    mne.export.export_raw(path, mne.io.RawArray(data, info, verbose="error"), fmt="bdf", verbose="error")
    return path


def raises(error, path, match, **kwargs):
    with pytest.raises(error, match=match) as info:
        load_recording(path, **kwargs)
    message = str(info.value)
    assert path.name not in message  # file names never leak into messages
    return message


def test_empty_file(tmp_path):
    (tmp_path / "empty.edf").write_bytes(b"")
    raises(NotARecordingError, tmp_path / "empty.edf", "empty")


def test_random_bytes(tmp_path):
    (tmp_path / "noise.edf").write_bytes(os.urandom(4096))
    raises(NotARecordingError, tmp_path / "noise.edf", "not an EDF")


def test_not_a_recording_type(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    raises(NotARecordingError, tmp_path / "notes.txt", "not supported")


def test_missing_file(tmp_path):
    raises(NotARecordingError, tmp_path / "absent.edf", "does not exist")


def test_truncated(good_edf, tmp_path):
    cut = tmp_path / "cut.edf"
    cut.write_bytes(good_edf.read_bytes()[:-1000])
    raises(CorruptRecordingError, cut, "truncated")


def test_truncated_inside_header(good_edf, tmp_path):
    cut = tmp_path / "cut.edf"
    cut.write_bytes(good_edf.read_bytes()[:300])
    raises(CorruptRecordingError, cut, "header")


def test_header_claims_more_records(good_edf, tmp_path):
    n_records = int(good_edf.read_bytes()[236:244])
    bad = patch_header(good_edf, tmp_path / "more.edf", 236, str(n_records + 5))
    raises(CorruptRecordingError, bad, f"claims {n_records + 5} data records")


def test_record_duration_zero(good_edf, tmp_path):
    raises(CorruptRecordingError, patch_header(good_edf, tmp_path / "zero.edf", 244, "0"), "duration of 0")


def test_unreadable_header_number(good_edf, tmp_path):
    raises(CorruptRecordingError, patch_header(good_edf, tmp_path / "nan.edf", 236, "abc"), "not a number")


def test_bdf_bytes_in_edf_file(tmp_path):
    bdf = write_bdf(tmp_path / "x.bdf")
    renamed = tmp_path / "x.edf"
    renamed.write_bytes(bdf.read_bytes())
    raises(CorruptRecordingError, renamed, "rename it to .bdf")


def test_24bit_data_declared_16bit(tmp_path):
    bdf = write_bdf(tmp_path / "x.bdf")
    relabelled = patch_header(bdf, tmp_path / "y.edf", 0, "0")
    message = raises(CorruptRecordingError, relabelled, "24-bit")
    assert "does not match" in message


def shift_last_record(src, dst, seconds: int):
    """Copy an EDF+ with the time stamp of its last data record moved `seconds` later (a gap)."""
    header = read_edf_header(src)
    raw = bytearray(src.read_bytes())
    record_bytes = int(header.samples_per_record.sum()) * 2
    i = header.annotation_signals[0]
    at = 256 * (len(header.labels) + 1) + (header.n_records - 1) * record_bytes + int(header.samples_per_record[:i].sum()) * 2
    old = bytes(raw[at : at + 16]).split(b"\x14", 1)[0]
    new = f"+{float(old) + seconds:g}".encode()
    raw[at : at + len(old)] = new.ljust(len(old), b" ")[: len(old)] if len(new) <= len(old) else new[: len(old)]
    dst.write_bytes(bytes(raw))
    return dst


def test_discontinuous_edf_plus_d_with_a_gap(good_edf, tmp_path):
    flagged = patch_header(good_edf, tmp_path / "d.edf", 192, "EDF+D")
    gap = shift_last_record(flagged, tmp_path / "gap.edf", seconds=3)
    raises(DiscontinuousRecordingError, gap, "discontinuous: after .* it jumps to")


def test_edf_plus_d_without_gaps_reads_as_continuous(good_edf, tmp_path):
    flagged = patch_header(good_edf, tmp_path / "d.edf", 192, "EDF+D")
    rec = load_recording(flagged)
    assert rec.n_epochs == 2 and rec.source_format == "EDF+"
    assert any("contiguous" in w for w in rec.warnings)


def test_shorter_than_one_epoch(tmp_path):
    path = tmp_path / "short.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like)], minutes=20 / 60)
    raises(TooShortError, path, "less than one 30-s epoch")


def test_no_recognisable_sleep_channel(tmp_path):
    path = tmp_path / "odd.edf"
    write_psg(path, [("Foo", 128, "uV", eeg_like), ("Bar", 128, "uV", eeg_like)], minutes=1)
    message = raises(ChannelMappingError, path, "no recognisable sleep channel")
    assert "Foo" in message and "channel_map" in message


def test_channel_map_with_unknown_label_lists_available(good_edf):
    message = raises(ChannelMappingError, good_edf, "no such channel", channel_map={"EEG_C3_A2": "Cz-Oz"})
    assert "C3-M2" in message and "ECG" in message


def test_channel_map_with_unknown_canonical(good_edf):
    raises(ChannelMappingError, good_edf, "not a SleepLM channel", channel_map={"EEG_Fz": "C3-M2"})


def test_unknown_position_map(good_edf):
    raises(ChannelMappingError, good_edf, "unknown position_map", position_map="philips")


def test_unknown_normalization(good_edf):
    raises(RecordingError, good_edf, "normalization must be", normalization="global")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((2, 9, EPOCH_SAMPLES), np.float32), "shape"),
        (np.zeros((2, 10, 3000), np.float32), "shape"),
        (np.zeros((10, EPOCH_SAMPLES), np.float32), "shape"),
        (np.zeros((2, 10, EPOCH_SAMPLES), np.float64), "float64"),
        (np.zeros((0, 10, EPOCH_SAMPLES), np.float32), "0 epochs"),
    ],
)
def test_wrong_tensor_shape_or_dtype(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    torch.save(torch.from_numpy(array), tmp_path / "x.pt")
    error = TooShortError if match == "0 epochs" else TensorFormatError
    raises(error, tmp_path / "x.npy", match)
    raises(error, tmp_path / "x.pt", match)


def test_nan_tensor(tmp_path):
    x = np.zeros((2, 10, EPOCH_SAMPLES), np.float32)
    x[1, 3, 7] = np.nan
    x[0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    raises(TensorFormatError, tmp_path / "x.npy", "2 NaN/inf")


class Payload:
    """Anything that is not a plain tensor: unpickling it could run code."""


def test_pickled_objects_are_never_unpickled(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "obj.pt")
    raises(TensorFormatError, tmp_path / "obj.pt", "never unpickled")
    np.save(tmp_path / "obj.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    raises(TensorFormatError, tmp_path / "obj.npy", "never unpickled")
    torch.save({"x": torch.zeros(3)}, tmp_path / "dict.pt")
    raises(TensorFormatError, tmp_path / "dict.pt", "holds a dict")


def test_random_bytes_tensor(tmp_path):
    (tmp_path / "x.pt").write_bytes(os.urandom(2048))
    raises(NotARecordingError, tmp_path / "x.pt", "not a torch.save file")
    (tmp_path / "x.npy").write_bytes(os.urandom(2048))
    raises(NotARecordingError, tmp_path / "x.npy", "not a NumPy")


def test_cli_prints_error_and_exits_2(tmp_path, capsys):
    (tmp_path / "noise.edf").write_bytes(os.urandom(4096))
    assert cli_main(["inspect", str(tmp_path / "noise.edf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_16bit_data_declared_24bit(good_edf, tmp_path):
    relabelled = patch_header(good_edf, tmp_path / "y.bdf", 0, "\xffBIOSEMI")
    raises(CorruptRecordingError, relabelled, "look 16-bit")
