"""One night of a cohort: measured by a Ray task, embedded and captioned by a SleepLM actor.

Every night gets its own folder ``DIR/parts/<night_id>/`` (``night.json``, ``events.parquet``,
``hypnogram.parquet``, and ``captions.parquet`` with SleepLM), built in a temporary folder and
renamed into place in one step: a folder under ``parts/`` is a finished night, and a run that was
killed leaves at most temporary folders, which the next run deletes. The night's SleepLM
embeddings go to ``DIR/embeddings/<night_id>.parquet`` (float16) before that rename.

`night_id` is a salted hash (the salt is kept in DIR) of the recording file's sha256 and of the
options that change the results (channel map, hypopnea rule, SleepLM weights): the same file
processed again is found done, a changed file or option is a new night, and nothing in the id
comes from the file name or the EDF header.

A night that fails to load or measure leaves ``DIR/failures/<night_id>.json`` (error class and
message, written atomically): a resumed run reports it failed again without re-reading it, unless
``retry_failed`` (``cohort --retry-failed``), since the same content with the same options fails the
same way. A changed file or option is a new night id and is tried. Failures with no night id (a
file that cannot be read) and failures of the SleepLM stage (a full disk, a lost GPU) are not
recorded and are tried again on every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sleeplm.cohort.inputs import NightTask
from sleeplm.io.allocator import keep_freed_memory
from sleeplm.io.reader import load_recording
from sleeplm.io.recording import CANONICAL_CHANNELS, Recording
from sleeplm.measure.analysis import NightAnalysis, analyze_night
from sleeplm.measure.events import EVENT_COLUMNS, stacked
from sleeplm.measure.summary import EXPORT_KEYS
from sleeplm.report.analyze_dir import json_safe

__all__ = [
    "CAPTION_DOMAINS", "PARTS", "EMBEDDINGS", "FAILURES", "RESULT_COLUMNS", "file_digest", "salted_hash", "measure_night",
    "SleepLMStage", "night_row",
]

logger = logging.getLogger(__name__)

PARTS = "parts"
EMBEDDINGS = "embeddings"
FAILURES = "failures"
TMP_PREFIX = ".tmp-"
CAPTION_DOMAINS = ("brain", "cardiac", "respiratory", "position_muscle", "stage_event")
# What a task hands back to the driver (one row per night); `tmp` is the unfinished folder
# a SleepLM stage completes.
RESULT_COLUMNS = ("file", "night_id", "subject_id", "night_label", "channel_map", "status", "error_class",
                  "message", "seconds", "tmp")
_CHUNK = 1 << 20


def file_digest(path) -> str:
    """sha256 (hex) of the file's bytes.

    Examples
    --------
    >>> _ = (tmp_dir / "a.bin").write_bytes(b"abc")
    >>> file_digest(tmp_dir / "a.bin") == hashlib.sha256(b"abc").hexdigest()
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def salted_hash(salt: str, *parts: str) -> str:
    """First 16 hex digits of sha256(salt, parts): ids that cannot be traced back without the salt.

    Examples
    --------
    >>> salted_hash("salt-1", "subject 7"), len(salted_hash("salt-2", "subject 7"))
    ('fa232e620cdb9760', 16)
    >>> salted_hash("salt-1", "subject 7") == salted_hash("salt-2", "subject 7")   # another cohort, another id
    False
    """
    return hashlib.sha256("\x1f".join((salt, *parts)).encode()).hexdigest()[:16]


def _result(row: dict, **fields) -> dict:
    result = {key: row.get(key) for key in ("night_label", "channel_map")}
    result.update(file=row["path"], night_id=None, subject_id=None, status="failed", error_class=None, message=None,
                  seconds=0.0, tmp=None)
    result.update(fields)
    return result


def _write_parquet(table: pd.DataFrame | pa.Table, path: Path) -> None:
    table = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(table, path)


def night_row(rec: Recording, analysis: NightAnalysis, night_id: str, subject_id: str | None,
              night_label: str | None) -> dict:
    """The night's row of ``nights.parquet``: identity, channels, staging source, rule, summary figures.

    Examples
    --------
    >>> row = night_row(tiny_recording(), tiny_analysis(), "n1", None, "baseline")
    >>> row["night_id"], row["night_label"], row["n_epochs"], row["staging_source"], row["tib_min"]
    ('n1', 'baseline', 30, 'reference scoring', 15.0)
    """
    present = [name for name, ok in zip(CANONICAL_CHANNELS, rec.channel_present) if ok]
    present += [info.canonical for info in rec.extra_channels if getattr(info, "present", True)]
    summary = analysis.summary
    row = {
        "night_id": night_id, "subject_id": subject_id, "night_label": night_label, "status": "done",
        "n_epochs": rec.n_epochs, "source_format": rec.source_format, "channels_present": ",".join(present),
        "staging_source": analysis.staging.source, "rule": analysis.hypopnea_rule, "errors": None,
        "warnings": " | ".join(rec.warnings) or None,
        **{key: summary.get(key) for key in EXPORT_KEYS},
        "not_assessable": json.dumps(json_safe({k: v for k, v in summary["not_assessable"].items() if k in EXPORT_KEYS}),
                                     sort_keys=True),
        "position_min": json.dumps(json_safe(summary.get("position_min") or {}), sort_keys=True),
        "sleeplm_checkpoint": None,
    }
    return json_safe(row)


def _events_table(analysis: NightAnalysis, night_id: str) -> pd.DataFrame:
    table = stacked(analysis.events, analysis.near_misses).reindex(columns=EVENT_COLUMNS)
    table["evidence"] = [json.dumps(json_safe(e), sort_keys=True) if isinstance(e, dict) else None for e in table["evidence"]]
    for column in ("kind", "subtype", "clock_start", "clock_end", "event_id"):
        table[column] = table[column].astype("string")
    table["confidence"] = pd.to_numeric(table["confidence"], errors="coerce").astype("float64")
    table.insert(0, "night_id", night_id)
    return table


def _hypnogram_table(rec: Recording, analysis: NightAnalysis, night_id: str) -> pd.DataFrame:
    hyp = analysis.staging.hypnogram
    return pd.DataFrame({
        "night_id": night_id,
        "epoch": np.arange(rec.n_epochs, dtype=np.int32),
        "clock": pd.array([rec.epoch_clock(i) for i in range(rec.n_epochs)], dtype="string"),
        "stage": pd.array(["?"] * rec.n_epochs if hyp is None else list(hyp), dtype="string"),
        "source": analysis.staging.source,
    })


def _record_failure(out: Path, night_id: str, error_class: str, message: str) -> None:
    """``failures/<night_id>.json``, written through a temporary file and a rename."""
    folder = out / FAILURES
    folder.mkdir(exist_ok=True)
    staged = folder / f"{TMP_PREFIX}{night_id}-{uuid.uuid4().hex[:8]}.json"
    staged.write_text(json.dumps({"error_class": error_class, "message": message}))
    os.replace(staged, folder / f"{night_id}.json")


def measure_night(row: dict, out_dir: str, salt: str, hypopnea_rule: str = "1A", model_id: str | None = None,
                  finalize: bool = True, retry_failed: bool = False) -> dict:
    """Load, measure and write one night (the Ray Data task; never raises).

    Parameters
    ----------
    row : a `NightTask` row (``path``, ``subject_id``, ``night_label``, ``channel_map``).
    out_dir : the cohort folder.
    salt : the cohort's salt.
    hypopnea_rule : the scoring rule's name (`sleeplm.measure.rules.RULES`).
    model_id : identifies the SleepLM weights when a SleepLM stage follows (part of the night id).
    finalize : rename the night into ``parts/`` now (no SleepLM stage follows).
    retry_failed : measure a night again although an earlier run recorded its failure.

    Returns
    -------
    dict with `RESULT_COLUMNS`: status "done", "skipped" (already in ``parts/``), "measured"
    (waiting for SleepLM, folder in ``tmp``) or "failed" (``error_class``, ``message``).

    Examples
    --------
    >>> row = {"path": str(tiny_night_path()), "subject_id": "s01", "night_label": None, "channel_map": None}
    >>> result = measure_night(row, str(tmp_dir), salt="salt-1")
    >>> result["status"], len(result["night_id"]), result["subject_id"] != "s01"   # the subject id is hashed
    ('done', 16, True)
    >>> measure_night(row, str(tmp_dir), salt="salt-1")["status"]              # resumable: already written
    'skipped'
    >>> bad = measure_night({**row, "path": str(tmp_dir / "missing.edf")}, str(tmp_dir), salt="salt-1")
    >>> bad["status"], bad["error_class"], bad["message"]                      # never raises
    ('failed', 'FileNotFoundError', 'the file cannot be read (No such file or directory).')
    >>> _ = (tmp_dir / "junk.edf").write_bytes(b"not a recording")
    >>> junk = measure_night({**row, "path": str(tmp_dir / "junk.edf")}, str(tmp_dir), salt="salt-1")
    >>> junk["error_class"], (tmp_dir / "failures" / f"{junk['night_id']}.json").is_file()   # recorded...
    ('NotARecordingError', True)
    >>> again = measure_night({**row, "path": str(tmp_dir / "junk.edf")}, str(tmp_dir), salt="salt-1")
    >>> again["error_class"], again["seconds"]                               # ...and not measured again
    ('NotARecordingError', 0.0)
    """
    started = time.perf_counter()
    keep_freed_memory()  # a worker measures night after night: its freed arrays serve the next night
    task = NightTask.from_row(row)
    out = Path(out_dir)
    try:
        digest = file_digest(task.path)
    except OSError as exc:
        return _result(row, error_class=type(exc).__name__, message=f"the file cannot be read ({exc.strerror or exc}).")
    settings = {"channel_map": task.channel_map, "rule": hypopnea_rule, "sleeplm": model_id}
    if task.annotations is not None:  # another scoring file is another measurement of the night
        try:
            settings["annotations"] = file_digest(task.annotations)
        except OSError:
            settings["annotations"] = task.annotations  # load_recording says what is wrong with it
    options = json.dumps(settings, sort_keys=True)
    night_id = salted_hash(salt, digest, options)
    subject_id = None if task.subject_id is None else salted_hash(salt, "subject", task.subject_id)
    ids = {"night_id": night_id, "subject_id": subject_id}
    if (out / PARTS / night_id).is_dir():
        return _result(row, status="skipped", **ids)
    recorded = out / FAILURES / f"{night_id}.json"
    if not retry_failed and recorded.is_file():
        failure = json.loads(recorded.read_text())
        return _result(row, error_class=failure["error_class"], message=failure["message"], **ids)
    tmp = out / PARTS / f"{TMP_PREFIX}{night_id}-{uuid.uuid4().hex[:8]}"
    try:
        rec = load_recording(task.path, channel_map=task.channel_map, annotations=task.annotations)
        has_scoring = rec.reference is not None and rec.reference.stages is not None
        # A night with its own scoring keeps it; YASA stages the others (its cross-check is a per-night option).
        analysis = analyze_night(rec, hypopnea_rule=hypopnea_rule, automatic_staging=not has_scoring)
        tmp.mkdir(parents=True)
        (tmp / "night.json").write_text(json.dumps(night_row(rec, analysis, night_id, subject_id, task.night_label)))
        _write_parquet(_events_table(analysis, night_id), tmp / "events.parquet")
        _write_parquet(_hypnogram_table(rec, analysis, night_id), tmp / "hypnogram.parquet")
    except Exception as exc:  # a bad night is recorded and never stops the cohort
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("night failed: %s", type(exc).__name__)
        _record_failure(out, night_id, type(exc).__name__, str(exc)[:500])
        return _result(row, error_class=type(exc).__name__, message=str(exc)[:500],
                       seconds=round(time.perf_counter() - started, 3), **ids)
    recorded.unlink(missing_ok=True)  # measured now (--retry-failed): the earlier failure no longer holds
    if finalize:
        _finish(tmp, out / PARTS / night_id)
        return _result(row, status="done", seconds=round(time.perf_counter() - started, 3), **ids)
    return _result(row, status="measured", seconds=round(time.perf_counter() - started, 3), tmp=str(tmp), **ids)


def _finish(tmp: Path, final: Path) -> None:
    """Rename the night's folder into place (atomic); a twin task that finished first wins."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def embeddings_table(embeddings: np.ndarray) -> pa.Table:
    """``epoch`` (int32) and ``embedding`` (fixed-size list of float16) per epoch."""
    half = np.asarray(embeddings, dtype=np.float16)
    return pa.table({
        "epoch": pa.array(np.arange(half.shape[0], dtype=np.int32)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(half.ravel()), half.shape[1]),
    })


class SleepLMStage:
    """Ray Data actor: SleepLM embeddings and captions of each measured night, then the night is finished.

    Parameters
    ----------
    out_dir : the cohort folder.
    load_model : picklable callable returning a `sleeplm.model.inference.SleepLM` (called once per actor).
    domains : caption domains (default all five).
    """

    def __init__(self, out_dir: str, load_model: Callable[[], Any], domains: tuple[str, ...] = CAPTION_DOMAINS):
        self.out = Path(out_dir)
        self.model = load_model()
        self.domains = tuple(domains)

    def __call__(self, row: dict) -> dict:
        if row["status"] != "measured":
            return row
        started = time.perf_counter()
        tmp, night_id = Path(row["tmp"]), row["night_id"]
        try:
            task = NightTask.from_row({"path": row["file"], "channel_map": row["channel_map"]})
            rec = load_recording(task.path, channel_map=task.channel_map)
            embeddings = self.model.encode_signals(rec.epochs, channel_mask=rec.channel_present)
            folder = self.out / EMBEDDINGS
            folder.mkdir(exist_ok=True)
            staged = folder / f"{TMP_PREFIX}{night_id}-{uuid.uuid4().hex[:8]}.parquet"
            pq.write_table(embeddings_table(embeddings), staged)
            os.replace(staged, folder / f"{night_id}.parquet")
            captions = pd.DataFrame([
                {"night_id": night_id, "epoch": epoch, "domain": domain, "caption": text}
                for domain in self.domains
                for epoch, text in enumerate(self.model.caption(rec.epochs, domain))
            ])
            _write_parquet(captions, tmp / "captions.parquet")
            night = json.loads((tmp / "night.json").read_text())
            night["sleeplm_checkpoint"] = self.model.checkpoint_id
            (tmp / "night.json").write_text(json.dumps(night))
            _finish(tmp, self.out / PARTS / night_id)
        except Exception as exc:  # recorded in failed.csv; the next run tries the night again
            shutil.rmtree(tmp, ignore_errors=True)
            return {**row, "status": "failed", "error_class": type(exc).__name__, "message": str(exc)[:500], "tmp": None}
        return {**row, "status": "done", "seconds": round(row["seconds"] + time.perf_counter() - started, 3), "tmp": None}
