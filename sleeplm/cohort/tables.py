"""The cohort's tidy tables: gathered from the finished nights, written atomically, read back.

Files in the cohort folder DIR:

- ``nights.parquet``: one row per night (done or failed): ``night_id``, ``subject_id`` (salted
  hash of the manifest's subject id, or null), ``night_label``, ``status`` ("done"/"failed"),
  ``n_epochs``, ``source_format``, ``channels_present`` (comma-separated), ``staging_source``,
  ``rule`` (hypopnea rule), ``errors`` ("ErrorClass: message" of a failed night), ``warnings``,
  the ``summary.json`` fields (`sleeplm.measure.summary.EXPORT_KEYS`), ``not_assessable`` and
  ``position_min`` (JSON), ``sleeplm_checkpoint`` (weights that embedded it, or null);
- ``events.parquet``: ``night_id`` + the events.csv columns (evidence as JSON);
- ``hypnograms.parquet``: ``night_id``, ``epoch``, ``clock``, ``stage``, ``source``;
- ``captions.parquet`` (with SleepLM weights): ``night_id``, ``epoch``, ``domain``, ``caption``;
- ``embeddings/<night_id>.parquet`` (with SleepLM weights): ``epoch``, ``embedding`` (float16);
- ``failed.csv``: ``file``, ``error_class``, ``message`` (the one file that names files: it is
  for whoever fixes them, and no tool hands it to a language model);
- ``failures/<night_id>.json``: the error of each night that failed (a resumed run does not
  measure it again unless ``retry_failed``; see `sleeplm.cohort.night`);
- ``salt``: the salt of every id (keep it to resume; without it the ids cannot be traced back).

Rows are sorted by ``night_id`` (then epoch or start time), so a resumed run writes the same
tables as an uninterrupted one.

Examples
--------
>>> from sleeplm.cohort import load_cohort
>>> from sleeplm.cohort.night import measure_night
>>> row = {"path": str(tiny_night_path()), "subject_id": None, "night_label": None, "channel_map": None}
>>> _ = write_tables(tmp_dir, [measure_night(row, str(tmp_dir), cohort_salt(tmp_dir))])
>>> cohort = load_cohort(tmp_dir)                   # a cohort of one 15-min "severe" night
>>> cohort.nights.query("ahi > 30")[["status", "ahi"]]
  status    ahi
0   done  ...
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sleeplm.cohort.night import EMBEDDINGS, PARTS, TMP_PREFIX
from sleeplm.errors import CohortInputError
from sleeplm.measure.events import EVENT_COLUMNS
from sleeplm.measure.summary import EXPORT_KEYS

__all__ = ["CohortTables", "load_cohort", "cohort_salt", "write_tables", "NIGHTS", "EVENTS", "HYPNOGRAMS",
           "CAPTIONS", "FAILED", "SALT", "FAILED_COLUMNS"]

logger = logging.getLogger(__name__)

NIGHTS, EVENTS, HYPNOGRAMS, CAPTIONS, FAILED, SALT = (
    "nights.parquet", "events.parquet", "hypnograms.parquet", "captions.parquet", "failed.csv", "salt")
FAILED_COLUMNS = ["file", "error_class", "message"]
NIGHT_COLUMNS = [
    "night_id", "subject_id", "night_label", "status", "n_epochs", "source_format", "channels_present",
    "staging_source", "rule", "errors", "warnings", *EXPORT_KEYS, "not_assessable", "position_min",
    "sleeplm_checkpoint",
]
HYPNOGRAM_COLUMNS = ["night_id", "epoch", "clock", "stage", "source"]
CAPTION_COLUMNS = ["night_id", "epoch", "domain", "caption"]


def cohort_salt(out_dir) -> str:
    """The cohort's salt: read from ``DIR/salt``, created (random, 128 bits) on the first run.

    Examples
    --------
    >>> salt = cohort_salt(tmp_dir)
    >>> len(salt), cohort_salt(tmp_dir) == salt, (tmp_dir / "salt").exists()      # made once, then read
    (32, True, True)
    """
    path = Path(out_dir) / SALT
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    _atomic_text(path, salt + "\n")
    return salt


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda tmp: table.to_parquet(tmp, index=False))


def _concat(frames: list[pd.DataFrame], columns: list[str], sort: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns).sort_values(sort, kind="stable").reset_index(drop=True)


def write_tables(out_dir, results: list[dict]) -> dict[str, Path]:
    """Gather the finished nights of `results` (a run's rows) into the cohort tables.

    Parameters
    ----------
    out_dir : the cohort folder (with ``parts/``).
    results : one dict per night of the run (``night_id``, ``status``, ``file``, ``error_class``,
        ``message``, ``night_label``, ``subject_id``); "done" and "skipped" nights are read from
        ``parts/``, "failed" ones become rows of ``failed.csv`` and failed rows of ``nights.parquet``.

    Returns
    -------
    {file name: path} of the tables written.

    Examples
    --------
    >>> from sleeplm.cohort.night import measure_night
    >>> row = {"path": str(tiny_night_path()), "subject_id": None, "night_label": None, "channel_map": None}
    >>> done = measure_night(row, str(tmp_dir), cohort_salt(tmp_dir))
    >>> failed = measure_night({**row, "path": str(tmp_dir / "missing.edf")}, str(tmp_dir), cohort_salt(tmp_dir))
    >>> sorted(write_tables(tmp_dir, [done, failed]))
    ['events.parquet', 'failed.csv', 'hypnograms.parquet', 'nights.parquet']
    >>> pd.read_parquet(tmp_dir / "nights.parquet")["status"].tolist(), len(pd.read_csv(tmp_dir / "failed.csv"))
    (['done', 'failed'], 1)
    """
    out = Path(out_dir)
    done = sorted({r["night_id"] for r in results if r["status"] in ("done", "skipped")})
    # Subject id and night label come from this run's input (a resumed night may be listed under
    # another subject or label now); the first listing of the same content wins.
    identity: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r["file"]):
        if r["status"] in ("done", "skipped"):
            identity.setdefault(r["night_id"], {"subject_id": r.get("subject_id"), "night_label": r.get("night_label")})
    failed = sorted((r for r in results if r["status"] == "failed"), key=lambda r: (r["file"], r["night_id"] or ""))
    nights, events, hypnograms, captions = [], [], [], []
    for night_id in done:
        part = out / PARTS / night_id
        nights.append({**json.loads((part / "night.json").read_text()), **identity[night_id]})
        events.append(pd.read_parquet(part / "events.parquet"))
        hypnograms.append(pd.read_parquet(part / "hypnogram.parquet"))
        if (part / "captions.parquet").is_file():
            captions.append(pd.read_parquet(part / "captions.parquet"))
    seen = set(done)
    for r in failed:
        if r["night_id"] is not None and r["night_id"] in seen:
            continue  # the same content listed twice: one row per night
        seen.add(r["night_id"])
        nights.append({"night_id": r["night_id"], "subject_id": r.get("subject_id"), "night_label": r.get("night_label"),
                       "status": "failed", "errors": f"{r['error_class']}: {r['message']}"})
    night_table = pd.DataFrame(nights).reindex(columns=NIGHT_COLUMNS)
    night_table = night_table.sort_values(["status", "night_id"], kind="stable", na_position="last").reset_index(drop=True)
    written = {
        NIGHTS: night_table,
        EVENTS: _concat(events, ["night_id", *EVENT_COLUMNS], ["night_id", "start_s", "kind"]),
        HYPNOGRAMS: _concat(hypnograms, HYPNOGRAM_COLUMNS, ["night_id", "epoch"]),
    }
    if captions:
        written[CAPTIONS] = _concat(captions, CAPTION_COLUMNS, ["night_id", "domain", "epoch"])
    paths = {}
    for name, table in written.items():
        _atomic_parquet(table, out / name)
        paths[name] = out / name
    failed_table = pd.DataFrame([{key: r[key] for key in FAILED_COLUMNS} for r in failed], columns=FAILED_COLUMNS)
    _atomic(out / FAILED, lambda tmp: failed_table.to_csv(tmp, index=False))
    paths[FAILED] = out / FAILED
    return paths


@dataclass
class CohortTables:
    """A cohort folder's tables as DataFrames.

    Attributes
    ----------
    folder : the cohort folder.
    nights, events, hypnograms, failed : the tables of the same names (see the module docstring).
    captions : SleepLM captions, or None when the cohort was run without weights.
    """

    folder: Path
    nights: pd.DataFrame
    events: pd.DataFrame
    hypnograms: pd.DataFrame
    failed: pd.DataFrame
    captions: pd.DataFrame | None = None

    @property
    def done(self) -> pd.DataFrame:
        """The nights that were measured (status "done")."""
        return self.nights[self.nights["status"] == "done"]

    def embeddings(self, night_id: str) -> np.ndarray:
        """SleepLM embeddings [N, E] (float16) of one night.

        Raises
        ------
        CohortInputError : the night has no embeddings (unknown id, or run without weights).

        Examples
        --------
        >>> from sleeplm.cohort.night import embeddings_table
        >>> (tmp_dir / EMBEDDINGS).mkdir()
        >>> pq.write_table(embeddings_table(np.eye(2, 4)), tmp_dir / EMBEDDINGS / "n1.parquet")   # 2 epochs, E = 4
        >>> empty = pd.DataFrame()
        >>> cohort = CohortTables(tmp_dir, nights=empty, events=empty, hypnograms=empty, failed=empty)
        >>> cohort.embeddings("n1")
        array([[1., 0., 0., 0.],
               [0., 1., 0., 0.]], dtype=float16)
        >>> cohort.embeddings("n2")
        Traceback (most recent call last):
        ...
        sleeplm.errors.CohortInputError: night n2 has no SleepLM embeddings in this cohort (it was run without weights, or the night id is unknown).
        """
        path = self.folder / EMBEDDINGS / f"{night_id}.parquet"
        if not path.is_file():
            raise CohortInputError(f"night {night_id} has no SleepLM embeddings in this cohort "
                                   "(it was run without weights, or the night id is unknown).")
        column = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)


def load_cohort(out_dir) -> CohortTables:
    """Read a cohort folder written by `sleeplm.cohort.run`.

    Raises
    ------
    CohortInputError : the folder holds no ``nights.parquet`` (not a cohort folder, or its run
        has not finished once).

    Examples
    --------
    >>> from sleeplm.cohort.night import measure_night
    >>> row = {"path": str(tiny_night_path()), "subject_id": None, "night_label": None, "channel_map": None}
    >>> _ = write_tables(tmp_dir, [measure_night(row, str(tmp_dir), cohort_salt(tmp_dir))])
    >>> cohort = load_cohort(tmp_dir)
    >>> len(cohort.nights), len(cohort.hypnograms), cohort.captions is None        # run without SleepLM weights
    (1, 30, True)
    >>> load_cohort(tmp_dir / "elsewhere")
    Traceback (most recent call last):
    ...
    sleeplm.errors.CohortInputError: ...
    """
    out = Path(out_dir)
    if not (out / NIGHTS).is_file():
        raise CohortInputError("this folder is not a cohort folder (no nights.parquet); "
                               "run `sleeplm-assistant cohort INPUT --out DIR` first.")
    return CohortTables(
        folder=out,
        nights=pd.read_parquet(out / NIGHTS),
        events=pd.read_parquet(out / EVENTS),
        hypnograms=pd.read_parquet(out / HYPNOGRAMS),
        failed=pd.read_csv(out / FAILED, dtype=str, keep_default_na=False),
        captions=pd.read_parquet(out / CAPTIONS) if (out / CAPTIONS).is_file() else None,
    )
