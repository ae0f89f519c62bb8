"""Sleep stages for the night: the file's own scoring, else SleepLM's stage captions, else YASA.

Every hypnogram is an array of "W", "N1", "N2", "N3", "R" (and "?" for unscored epochs), one per
30-s epoch, with the name of its source. When a second source exists (e.g. the file's scoring
and SleepLM), their agreement (accuracy, Cohen's kappa) is reported beside it.

Examples
--------
>>> from sleeplm.measure.staging import stage_night
>>> staging = stage_night(tiny_recording(), automatic=False)     # a night with its own scoring
>>> staging.source, staging.hypnogram[:2].tolist()
('reference scoring', ['W', 'N1'])
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import signal

from sleeplm.io.preprocess import STAGER_MIN_SFREQ, STAGER_SFREQ, stager_rate_note
from sleeplm.measure.quality import artefact_segments, bad_seconds
from sleeplm.io.recording import EPOCH_SEC, STAGES, Recording
from sleeplm.measure.signals import get_signal

__all__ = ["StagingResult", "stage_night", "stage_with_yasa", "stage_with_sleeplm", "stage_from_caption", "agreement"]

logger = logging.getLogger(__name__)

MAX_BAD_EEG_SHARE = 0.5
_YASA_STAGES = {"WAKE": "W", "W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "R", "R": "R"}
# Stage words in SleepLM stage_event captions, most specific first.
_CAPTION_STAGES = [
    (r"\bREM\b|rapid[- ]eye[- ]movement sleep|\bstage R\b", "R"),
    (r"\bN3\b|stage 3|slow[- ]wave sleep|deep sleep", "N3"),
    (r"\bN2\b|stage 2", "N2"),
    (r"\bN1\b|stage 1", "N1"),
    (r"\bwake\b|\bawake\b|wakefulness|\bstage W\b", "W"),
]


@dataclass
class StagingResult:
    """A hypnogram and where it came from.

    Attributes
    ----------
    hypnogram : per-epoch stage labels (object array of "W", "N1", "N2", "N3", "R", "?"),
        or None when no source could stage the night (then `unavailable` says why).
    source : "reference scoring", "sleeplm", "yasa" or "none".
    agreement : {"with": other source, "accuracy": 0-1, "kappa": Cohen's kappa, "n_epochs": compared}
        when a second source exists, else None.
    unavailable : reasons the automatic sources could not run, by source.
    note : what the user should know about how the automatic stager ran (e.g. a low-rate EEG
        resampled for it, with the expected loss), else None.
    """

    hypnogram: np.ndarray | None
    source: str
    agreement: dict | None = None
    unavailable: dict | None = None
    note: str | None = None


def stage_from_caption(text: str) -> str:
    """The stage named in a SleepLM stage_event caption ("?" when it names none).

    Examples
    --------
    >>> stage_from_caption("Stage N2 sleep with sleep spindles."), stage_from_caption("REM sleep."), stage_from_caption("Noisy.")
    ('N2', 'R', '?')
    """
    for pattern, stage in _CAPTION_STAGES:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return stage
    return "?"


def stage_with_sleeplm(rec: Recording, model, progress=None) -> np.ndarray:
    """Stage each epoch from SleepLM's ``stage_event`` caption of it (`model.caption`).

    Examples
    --------
    >>> class Captioner:                  # stands in for a SleepLM: one stage_event caption per epoch
    ...     def caption(self, epochs, domain, progress=None):
    ...         return ["Wake, eyes open." if i < 2 else "Stage N2 sleep." for i in range(len(epochs))]
    >>> stages = stage_with_sleeplm(tiny_recording(), Captioner())
    >>> stages.size, stages[:3].tolist()
    (30, ['W', 'W', 'N2'])
    """
    captions = model.caption(rec.epochs, domain="stage_event", progress=progress)
    return np.array([stage_from_caption(c) for c in captions], dtype=object)


def _at_rate(sig, sfreq: float) -> np.ndarray:
    if sig.sfreq == sfreq:
        return np.asarray(sig.data, dtype=float)
    ratio = Fraction(sfreq / sig.sfreq).limit_denominator(100)
    return signal.resample_poly(sig.data, ratio.numerator, ratio.denominator)


def _usable_eeg(rec: Recording, artefacts=None):
    """The central EEG with the fewest flat/pop/clipped seconds (C4 first on a tie).

    `artefacts` : `sleeplm.measure.quality.artefact_segments(rec)` when already computed (its EEG
    rows are used), else the EEG channels are checked here.

    Raises ValueError without EEG, or when every EEG is unusable for more than half the night:
    YASA would stage a dead lead as wake all night, which is no sleep measurement at all.
    """
    names = [name for name in ("EEG_C4_A1", "EEG_C3_A2") if rec.signals.get(name) is not None]
    if not names:
        raise ValueError("no EEG channel, so sleep cannot be staged automatically")
    n_seconds = rec.n_epochs * EPOCH_SEC
    if artefacts is None:
        artefacts = artefact_segments(rec, channels=names)
    bad_share = {name: bad_seconds(artefacts, (name,), n_seconds).mean() for name in names}
    best = min(names, key=bad_share.get)
    if bad_share[best] > MAX_BAD_EEG_SHARE:
        raise ValueError(f"the EEG is flat or artefact for {bad_share[best]:.0%} of the night, "
                         "so sleep cannot be staged automatically")
    return rec.signals[best]  # YASA checks the rate itself, below


def stage_with_yasa(rec: Recording, artefacts=None) -> np.ndarray:
    """Stage the night with YASA's shipped classifier (EEG, plus EOG and chin EMG when present).

    An EEG sampled at 80 Hz or less (YASA's minimum) is resampled to 100 Hz, the rate YASA's
    classifier works at (`sleeplm.io.preprocess.stager_rate_note` says what is lost); EOG and EMG follow the EEG's rate.
    `artefacts` (`sleeplm.measure.quality.artefact_segments(rec)`, when already computed) picks the EEG.

    Raises
    ------
    ValueError : no EEG channel (at 50 Hz or more), or EEG flat or artefact for more than half the night.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> stages = stage_with_yasa(rec)                       # a few seconds
    >>> stages.size == rec.n_epochs, set(stages) <= {"W", "N1", "N2", "N3", "R"}
    (True, True)
    """
    return _yasa_stages(rec, _usable_eeg(rec, artefacts))


def _yasa_stages(rec: Recording, eeg) -> np.ndarray:
    import mne
    import yasa

    sfreq = eeg.sfreq if eeg.sfreq > STAGER_MIN_SFREQ else STAGER_SFREQ
    n_samples = int(round(rec.duration_s * sfreq))
    names, types, rows = [], [], []
    for name, kind in ((None, "eeg"), ("EOG_Left", "eog"), ("EMG_Chin", "emg")):
        sig = eeg if name is None else get_signal(rec, name)
        if sig is not None:
            data = _at_rate(sig, sfreq)[:n_samples]
            rows.append(np.pad(data, (0, n_samples - len(data)), mode="edge"))
            names.append(kind)
            types.append(kind)
    info = mne.create_info(names, sfreq, types)
    raw = mne.io.RawArray(np.vstack(rows) * 1e-6, info, verbose="error")  # uV -> V, as mne expects
    with warnings.catch_warnings():
        # The classifier was pickled with an older scikit-learn; YASA validates its features itself.
        warnings.filterwarnings("ignore", message=".*(unpickle|version).*")
        mne.set_log_level("ERROR")
        staging = yasa.SleepStaging(raw, eeg_name="eeg", eog_name="eog" if "eog" in names else None,
                                    emg_name="emg" if "emg" in names else None)
        predicted = staging.predict()
    values = np.asarray(predicted.hypno.values if hasattr(predicted, "hypno") else predicted)
    stages = np.array([_YASA_STAGES.get(str(v).upper(), "?") for v in values], dtype=object)
    return np.pad(stages, (0, max(rec.n_epochs - len(stages), 0)), constant_values="?")[: rec.n_epochs]


def agreement(a: np.ndarray, b: np.ndarray, other: str) -> dict:
    """Accuracy and Cohen's kappa of two hypnograms over the epochs both scored.

    Examples
    --------
    >>> a = np.array(["W", "N1", "N2", "N2", "R", "?"], dtype=object)
    >>> b = np.array(["W", "N2", "N2", "N2", "R", "N2"], dtype=object)
    >>> agreement(a, b, "yasa")                             # the "?" epoch is not compared
    {'with': 'yasa', 'accuracy': 0.8, 'kappa': 0.706, 'n_epochs': 5}
    """
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    both = np.isin(a, STAGES) & np.isin(b, STAGES)
    if not both.any():
        return {"with": other, "accuracy": None, "kappa": None, "n_epochs": 0}
    kappa = cohen_kappa_score(a[both].astype(str), b[both].astype(str))
    return {"with": other, "accuracy": round(float((a[both] == b[both]).mean()), 3),
            "kappa": None if np.isnan(kappa) else round(float(kappa), 3), "n_epochs": int(both.sum())}


def stage_night(rec: Recording, model=None, automatic: bool = True, artefacts=None) -> StagingResult:
    """Stage the night from the best source available.

    Parameters
    ----------
    rec : the night.
    model : a loaded SleepLM (`sleeplm.model.inference.SleepLM`) whose ``caption(epochs,
        domain="stage_event")`` gives stage captions; None to skip SleepLM.
    automatic : also run the automatic stager (YASA) when the file has its own scoring, to
        report agreement. SleepLM, when given, is always compared.
    artefacts : `sleeplm.measure.quality.artefact_segments(rec)` when already computed (picks YASA's
        EEG without checking the EEG channels again), else None.

    Returns
    -------
    `StagingResult`: the file's reference scoring when present; else SleepLM's stages when a
    model is given; else YASA's. With two sources, `agreement` compares the chosen one with
    the other. With none (no EEG and no model), ``hypnogram`` is None and `unavailable` says why.

    Examples
    --------
    >>> rec = tiny_recording()
    >>> staging = stage_night(rec, automatic=False)         # the file's own scoring comes first
    >>> staging.source, staging.hypnogram.size, staging.agreement
    ('reference scoring', 30, None)
    """
    sources: dict[str, np.ndarray] = {}
    unavailable: dict[str, str] = {}
    if rec.reference is not None and rec.reference.stages is not None and np.isin(rec.reference.stages, STAGES).any():
        sources["reference scoring"] = np.asarray(rec.reference.stages, dtype=object)
    if model is not None:
        try:
            sources["sleeplm"] = stage_with_sleeplm(rec, model)
        except Exception as exc:  # the model is optional; its failure must not stop the analysis
            logger.exception("SleepLM staging failed")  # with its traceback: a bug must be findable
            unavailable["sleeplm"] = f"SleepLM captioning failed ({type(exc).__name__})"
    note = None
    if len(sources) < 2 and (automatic or not sources):
        try:
            eeg = _usable_eeg(rec, artefacts)
            sources["yasa"] = _yasa_stages(rec, eeg)
            note = stager_rate_note(eeg.sfreq)
        except ValueError as exc:
            unavailable["yasa"] = str(exc)
    if not sources:
        return StagingResult(None, "none", None, unavailable)
    names = list(sources)
    chosen = names[0]
    result = StagingResult(sources[chosen], chosen, None, unavailable or None, note)
    if len(names) > 1:
        result.agreement = agreement(sources[chosen], sources[names[1]], names[1])
    return result
