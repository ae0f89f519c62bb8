"""Budgets before allocation: hostile headers are refused from the header alone, under an address-space limit.

The bombs are tiny EDF files whose headers claim huge durations or absurd rates; before the
budget checks one of them made `inspect` allocate hundreds of GiB. Each is loaded in a child
process whose address space is capped with ``resource.setrlimit(RLIMIT_AS)``, so an allocation
beyond the cap fails there (MemoryError), never on the test machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_io import eeg_like, write_psg

from sleeplm.errors import CorruptRecordingError, RecordingError, ResourceLimitError
from sleeplm.io import reader
from sleeplm.io.reader import MAX_RECORDING_S, load_budget, load_recording, read_edf_header

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE_LIMIT = int(1.5 * 1024**3)


def edf_bomb(path: Path, n_records: int, record_s: float, samples: int = 1, labels=("EEG C3-M2", "ECG")) -> Path:
    """A minimal, size-consistent EDF whose header claims `n_records` records of `record_s` s."""
    n = len(labels)

    def fields(values, width):
        return b"".join(str(v).encode("latin-1").ljust(width)[:width] for v in values)

    fixed = (b"0".ljust(8) + b"X".ljust(80) + b"X".ljust(80) + b"01.01.01" + b"22.00.00"
             + str(256 * (n + 1)).encode().ljust(8) + b"".ljust(44) + str(n_records).encode().ljust(8)
             + f"{record_s:g}".encode().ljust(8) + str(n).encode().ljust(4))
    signal_block = (fields(labels, 16) + fields([""] * n, 80) + fields(["uV"] * n, 8) + fields([-500] * n, 8)
                    + fields([500] * n, 8) + fields([-32768] * n, 8) + fields([32767] * n, 8) + fields([""] * n, 80)
                    + fields([samples] * n, 8) + fields([""] * n, 32))
    data = np.zeros(n_records * samples * n, dtype="<i2").tobytes()
    path.write_bytes(fixed + signal_block + data)
    return path


BOMBS = {  # name: (n_records, record_s, samples per record)
    "300000s": (1, 300_000, 1),
    "3000000s": (1, 3_000_000, 1),
    "99999999s": (1, 99_999_999, 1),
    "one-28800s-record": (1, 28_800, 1),
}


def run_limited(code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a child capped at ADDRESS_SPACE_LIMIT bytes of address space."""
    prelude = textwrap.dedent(f"""
        import resource, json, sys
        resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bombs_are_refused_under_an_address_space_limit(tmp_path):
    paths = {name: str(edf_bomb(tmp_path / f"{name}.edf", *spec)) for name, spec in BOMBS.items()}
    assert all(os.path.getsize(p) == 772 for p in paths.values())
    out = run_limited(f"""
        import resource
        from sleeplm.io.reader import load_recording
        from sleeplm.errors import RecordingError
        from cli import main
        results = {{}}
        for name, path in {paths!r}.items():
            try:
                load_recording(path)
                results[name] = "loaded"
            except RecordingError as exc:
                results[name] = type(exc).__name__ + ": " + str(exc)
            except MemoryError:
                results[name] = "MemoryError"
            results[name + " inspect exit"] = main(["inspect", path])
        # VmHWM: this process's peak RSS since exec (ru_maxrss would include the forking parent's)
        status = open("/proc/self/status").read()
        results["peak_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
        print(json.dumps(results))
    """)
    for name in BOMBS:
        assert out[name].startswith("ResourceLimitError"), (name, out[name])
        assert out[name + " inspect exit"] != 0
    assert "'number of data records'" in out["99999999s"] and "'duration of a data record'" in out["99999999s"]
    assert "'samples per record' of signal 'EEG C3-M2'" in out["one-28800s-record"]
    assert out["peak_mb"] < 1536


def test_budget_states_the_field_and_passes_a_real_night(tmp_path):
    path = tmp_path / "ok.edf"
    write_psg(path, [("C3-M2", 256, "uV", eeg_like), ("ECG", 256, "uV", eeg_like)], minutes=2)
    sizes = load_budget(read_edf_header(path))
    assert set(sizes) == {"epochs", "signals", "channel_work", "peak"}
    assert 0 < sizes["peak"] < 64 * 1024**2
    with pytest.raises(ResourceLimitError, match="memory budget"):
        load_budget(read_edf_header(path), budget_bytes=sizes["peak"] - 1)
    long = edf_bomb(tmp_path / "long.edf", MAX_RECORDING_S // 30 + 1, 30)
    with pytest.raises(ResourceLimitError, match="number of data records"):
        load_recording(long)


def test_an_eight_hour_night_fits_the_budget():
    header = reader.EdfHeader(
        file_type="EDF", plus=False, n_records=28_800, record_s=1.0, labels=[f"S{i}" for i in range(10)],
        transducers=[""] * 10, units=["uV"] * 10, physical_min=np.full(10, -1.0), physical_max=np.ones(10), digital_min=np.full(10, -1.0),
        digital_max=np.ones(10), samples_per_record=np.full(10, 256), annotation_signals=[], start_seconds=0.0,
    )
    assert load_budget(header)["peak"] < reader.MEMORY_BUDGET_BYTES


def test_a_file_truncated_while_read_is_a_recording_error(tmp_path, monkeypatch):
    path = tmp_path / "night.edf"
    write_psg(path, [("C3-M2", 128, "uV", eeg_like), ("ECG", 128, "uV", eeg_like)], minutes=2)
    verified = read_edf_header

    def then_truncate(p):
        header = verified(p)
        with open(p, "r+b") as f:  # another process cuts the file after the header was checked
            f.truncate(os.path.getsize(p) // 2)
        return header

    monkeypatch.setattr(reader, "read_edf_header", then_truncate)
    with pytest.raises(RecordingError) as info:
        load_recording(path)
    assert isinstance(info.value, CorruptRecordingError)


def test_the_server_admits_loads_by_memory_not_by_count():
    from app import MemoryGate

    gate = MemoryGate(capacity=100, timeout_s=0.2)
    with gate.reserve(60):
        with pytest.raises(RecordingError, match="busy"):
            with gate.reserve(60):
                pass
        with gate.reserve(40):  # a small load still fits beside the big one
            assert gate.in_use == 100
    with gate.reserve(60):
        assert gate.in_use == 60
    assert gate.in_use == 0


def test_a_bomb_upload_is_refused_before_any_load(tmp_path, monkeypatch):
    import gradio as gr

    import app

    bomb = edf_bomb(tmp_path / "bomb.edf", 1, 3_000_000)
    reserved = []
    monkeypatch.setattr(app.LOAD_GATE, "reserve", lambda n: reserved.append(n))
    with pytest.raises(gr.Error, match="samples per record|number of data records"):
        list(app.load_night(str(bomb), None, root=tmp_path / "root", llm_factory=lambda: "none"))
    assert reserved == []
