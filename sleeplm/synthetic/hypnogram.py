"""A plausible adult hypnogram: sleep-onset latency, ~90-min NREM-REM cycles, final wake.

The shape follows textbook sleep architecture (Carskadon & Dement, "Normal human sleep: an
overview"): N3 is concentrated in the first two cycles, REM periods lengthen across the night,
brief awakenings (one or two epochs, followed by N1) punctuate sleep, more of them when sleep
is fragmented (as in sleep apnea).
"""

from __future__ import annotations

import numpy as np

from sleeplm.io.recording import EPOCH_SEC

__all__ = ["simulate_hypnogram"]

_EPOCHS_PER_MIN = 60 // EPOCH_SEC


def _minutes(rng: np.random.Generator, low: float, high: float) -> int:
    """A stage-run length drawn uniformly in minutes, returned in epochs (at least one)."""
    return max(1, int(round(rng.uniform(low, high) * _EPOCHS_PER_MIN)))


def simulate_hypnogram(n_epochs: int, rng: np.random.Generator, fragmentation: float = 0.0) -> np.ndarray:
    """Stage label per 30-s epoch (``"W","N1","N2","N3","R"``).

    Parameters
    ----------
    n_epochs : number of 30-s epochs of the night.
    rng : random generator (the caller seeds it).
    fragmentation : 0 (healthy) .. 1 (severe sleep apnea): more brief awakenings and N1,
        less N3 and REM.

    Returns
    -------
    np.ndarray of ``<U2`` stage strings, length `n_epochs`.

    Notes
    -----
    Sleep-onset latency (10-20 min in a full night) and the final wake (3-10 min, nights of an
    hour or more) shrink with short nights, so a 10-min test night still contains sleep.

    Examples
    --------
    >>> import numpy as np
    >>> stages = simulate_hypnogram(120, np.random.default_rng(0))   # one hour
    >>> len(stages), str(stages[0]), set(stages) <= {"W", "N1", "N2", "N3", "R"}
    (120, 'W', True)
    >>> calm = simulate_hypnogram(960, np.random.default_rng(1))
    >>> broken = simulate_hypnogram(960, np.random.default_rng(1), fragmentation=1.0)
    >>> bool((calm == "N3").sum() > (broken == "N3").sum())   # fragmented sleep holds less N3
    True
    """
    night_h = n_epochs * EPOCH_SEC / 3600
    scale = min(1.0, night_h / 3)
    runs: list[tuple[str, int]] = [("W", max(1, int(_minutes(rng, 10, 20) * scale)))]
    cycle = 0
    total = runs[0][1]
    while total < n_epochs:
        n3_max = max(0.0, 38 - 14 * cycle) * (1 - 0.6 * fragmentation)
        rem_mean = min(28.0, 6 + 6 * cycle) * (1 - 0.3 * fragmentation)
        cycle_runs = [
            ("N1", _minutes(rng, 3, 7) if cycle == 0 else _minutes(rng, 1, 3)),
            ("N2", _minutes(rng, 10, 18) if cycle == 0 else _minutes(rng, 20, 35)),
        ]
        if n3_max >= 2:
            cycle_runs.append(("N3", _minutes(rng, 0.6 * n3_max, n3_max)))
        cycle_runs += [("N2", _minutes(rng, 5, 12)), ("R", _minutes(rng, 0.8 * rem_mean, 1.15 * rem_mean))]
        if cycle_runs and rng.random() < 0.6:  # cycles often end in a short arousal from REM
            cycle_runs.append(("W", _minutes(rng, 0.5, 2)))
        runs += cycle_runs
        total += sum(n for _, n in cycle_runs)
        cycle += 1
    stages = np.concatenate([np.full(n, stage, dtype="<U2") for stage, n in runs])[:n_epochs]

    if night_h >= 1:  # the final wake before lights-on
        final = _minutes(rng, 3, 10)
        stages[-final:] = "W"
    _insert_brief_awakenings(stages, rng, rate_per_h=1.0 + 5.0 * fragmentation)
    return stages


def _insert_brief_awakenings(stages: np.ndarray, rng: np.random.Generator, rate_per_h: float) -> None:
    """Turn random sleep epochs into 1-2 epochs of W followed by one epoch of N1 (in place)."""
    asleep = np.flatnonzero(stages != "W")
    if asleep.size < 10:
        return
    n_awake = rng.poisson(rate_per_h * asleep.size * EPOCH_SEC / 3600)
    for first in np.sort(rng.choice(asleep[2:-3], size=min(n_awake, asleep.size // 10), replace=False)):
        length = int(rng.integers(1, 3))
        if stages[first - 1] == "W" or stages[first + length] == "W":
            continue  # would merge with existing wake; keep wake runs brief
        stages[first : first + length] = "W"
        stages[first + length] = "N1"
