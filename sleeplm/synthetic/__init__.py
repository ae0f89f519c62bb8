"""Synthetic PSG nights with exact ground truth (the simulator behind the tests and the demo night).

>>> from sleeplm.synthetic import simulate_night, write_night, load_truth
>>> night = simulate_night(duration_h=1.0, seed=3, severity="severe", montage="aasm", sfreq=128)
>>> path = write_night(night, tmp_dir / "night.edf")        # EDF+ and night.edf.truth.json
>>> load_truth(path).ahi >= 30
True

Modules: `hypnogram` (sleep architecture), `scenario` (event timing = the truth),
`physiology` (waveforms), `montages` (labels, units, rates, position codes of each system),
`night` (`simulate_night`, `Truth`), `edf` (`write_night`, `load_truth`).
"""

from sleeplm.synthetic.edf import (
    PATIENT_BIRTHDATE,
    PATIENT_CODE,
    PATIENT_NAME,
    RECORDING_DATE,
    load_truth,
    truth_path,
    write_night,
)
from sleeplm.synthetic.montages import MONTAGES, POSITION_ENCODINGS
from sleeplm.synthetic.night import (
    SIMULATOR_VERSION,
    SimulationError,
    SyntheticNight,
    Truth,
    render_source,
    simulate_night,
)
from sleeplm.synthetic.scenario import SEVERITIES

__all__ = [
    "MONTAGES",
    "PATIENT_BIRTHDATE",
    "PATIENT_CODE",
    "PATIENT_NAME",
    "POSITION_ENCODINGS",
    "RECORDING_DATE",
    "SEVERITIES",
    "SIMULATOR_VERSION",
    "SimulationError",
    "SyntheticNight",
    "Truth",
    "load_truth",
    "render_source",
    "simulate_night",
    "truth_path",
    "write_night",
]
