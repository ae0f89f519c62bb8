"""The nights of a cohort: a folder searched for recordings, or a CSV manifest.

A folder is searched recursively for ``.edf`` and ``.bdf`` files (any case); annotation-only
EDF+ files (e.g. Sleep-EDF's ``*-Hypnogram.edf``, read beside their recording by
`sleeplm.io.reader.load_recording`) are not nights and are left out. In the layout
``INPUT/<subject>/<night>.edf`` (any depth below ``<subject>``) the first-level folder names the
subject: nights in one such folder share a subject id, which, like a manifest's, reaches the
outputs only as a salted hash (never the folder's name). Recordings directly in INPUT have no
subject id. Night labels come only from a manifest (file names may identify a person). A manifest
is a CSV with the columns

- ``path`` (required): the recording, absolute or relative to the manifest's folder;
- ``subject_id`` (optional): groups a person's nights; only its salted hash reaches the outputs;
- ``night_label`` (optional): e.g. "night 1", "diagnostic", "treatment";
- ``channel_map`` (optional): a JSON object ``{"canonical name": "file label"}`` handed to
  `load_recording` (see `sleeplm.io.channels`);
- ``annotations`` (optional): the night's scoring file (NSRR or Profusion XML, UCDDB text,
  Noxturnal CSV, EDF+ hypnogram; see `sleeplm.io.scoring`), absolute or relative to the manifest's
  folder. Without it, as in a folder, a scoring file named like the recording beside it is used.

Examples
--------
>>> import shutil
>>> from sleeplm.cohort.inputs import discover_nights
>>> (tmp_dir / "study" / "s01").mkdir(parents=True)
>>> _ = shutil.copy(tiny_night_path(), tmp_dir / "study" / "s01" / "n1.edf")
>>> tasks = discover_nights(tmp_dir / "study")
>>> Path(tasks[0].path).relative_to(tmp_dir).as_posix(), tasks[0].subject_id, tasks[0].night_label
('study/s01/n1.edf', 's01', None)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from sleeplm.errors import CohortInputError, RecordingError
from sleeplm.io.reader import read_edf_header

__all__ = ["NightTask", "discover_nights", "MANIFEST_COLUMNS", "RECORDING_SUFFIXES"]

logger = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".edf", ".bdf")
MANIFEST_COLUMNS = ("path", "subject_id", "night_label", "channel_map", "annotations")


@dataclass(frozen=True)
class NightTask:
    """One night to process.

    Attributes
    ----------
    path : the recording file (as found or as written in the manifest, resolved).
    subject_id : the manifest's subject id or the subject folder's name (hashed before it is
        written anywhere), or None.
    night_label : the manifest's night label, or None.
    channel_map : ``{canonical: file label}`` for `load_recording`, or None.
    annotations : the manifest's scoring file of the night (resolved), or None.
    """

    path: str
    subject_id: str | None = None
    night_label: str | None = None
    channel_map: dict | None = None
    annotations: str | None = None

    def to_row(self) -> dict:
        """A Ray Data row (the channel map as JSON text, so every row has the same columns).

        Examples
        --------
        >>> task = NightTask(path="study/s01/n1.edf", subject_id="s01", night_label="baseline",
        ...                  channel_map={"EEG_C3_A2": "C3"})
        >>> task.to_row()
        {'path': 'study/s01/n1.edf', 'subject_id': 's01', 'night_label': 'baseline', 'channel_map': '{"EEG_C3_A2": "C3"}', 'annotations': None}
        """
        row = asdict(self)
        row["channel_map"] = None if self.channel_map is None else json.dumps(self.channel_map, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict) -> NightTask:
        """The task of a Ray Data row (`to_row`); missing subject, label and map are None.

        Examples
        --------
        >>> task = NightTask(path="study/s01/n1.edf", subject_id="s01", channel_map={"EEG_C3_A2": "C3"})
        >>> NightTask.from_row(task.to_row()) == task, NightTask.from_row({"path": "n2.edf"}).channel_map is None
        (True, True)
        """
        channel_map = row.get("channel_map")
        return cls(path=row["path"], subject_id=row.get("subject_id"), night_label=row.get("night_label"),
                   channel_map=None if channel_map is None else json.loads(channel_map),
                   annotations=row.get("annotations"))


def _annotation_only(path: Path) -> bool:
    try:
        header = read_edf_header(path)
    except RecordingError:
        return False  # a damaged file is still a night: its error goes to failed.csv
    return not header.data_signals


def _from_folder(folder: Path) -> list[NightTask]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in RECORDING_SUFFIXES)
    tasks = []
    for path in files:
        if _annotation_only(path):
            logger.info("skipping an annotation-only file (scoring, not a night)")
            continue
        relative = path.relative_to(folder).parts
        tasks.append(NightTask(path=str(path), subject_id=relative[0] if len(relative) > 1 else None))
    return tasks


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _from_manifest(manifest: Path) -> list[NightTask]:
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise CohortInputError(f"the manifest could not be read as CSV ({exc}); it needs a 'path' column.") from None
    unknown = [c for c in table.columns if c not in MANIFEST_COLUMNS]
    if "path" not in table.columns or unknown:
        raise CohortInputError(
            f"the manifest's columns must be {', '.join(MANIFEST_COLUMNS)} ('path' required); "
            f"found {', '.join(map(str, table.columns)) or 'none'}."
        )
    tasks = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        path = _text(row.get("path"))
        if path is None:
            raise CohortInputError(f"manifest line {line} has an empty 'path'.")
        channel_map = _text(row.get("channel_map"))
        if channel_map is not None:
            try:
                channel_map = json.loads(channel_map)
            except ValueError:
                channel_map = None
            if not isinstance(channel_map, dict) or not all(isinstance(v, str) for v in channel_map.values()):
                raise CohortInputError(
                    f"manifest line {line}: 'channel_map' must be a JSON object such as "
                    '{"EEG_C3_A2": "C3-M2"}.'
                )
        resolved = Path(path) if Path(path).is_absolute() else manifest.parent / path
        annotations = _text(row.get("annotations"))
        if annotations is not None and not Path(annotations).is_absolute():
            annotations = str(manifest.parent / annotations)
        tasks.append(NightTask(path=str(resolved), subject_id=_text(row.get("subject_id")),
                               night_label=_text(row.get("night_label")), channel_map=channel_map,
                               annotations=annotations))
    return tasks


def discover_nights(source) -> list[NightTask]:
    """The nights of a cohort input.

    Parameters
    ----------
    source : a folder (searched recursively for EDF/EDF+/BDF files) or a ``.csv`` manifest.

    Returns
    -------
    list of `NightTask`, in path order for a folder and in line order for a manifest.

    Raises
    ------
    CohortInputError : the input does not exist, is neither a folder nor a CSV, holds no
        recording, or the manifest is malformed.

    Examples
    --------
    >>> import shutil
    >>> (tmp_dir / "study" / "s01").mkdir(parents=True)
    >>> _ = shutil.copy(tiny_night_path(), tmp_dir / "study" / "s01" / "night1.edf")
    >>> [Path(task.path).name for task in discover_nights(tmp_dir / "study")]     # folders are searched recursively
    ['night1.edf']
    >>> _ = (tmp_dir / "manifest.csv").write_text(f"path,subject_id,night_label\\n{tmp_dir / 'study' / 's01' / 'night1.edf'},s01,baseline\\n")
    >>> task = discover_nights(tmp_dir / "manifest.csv")[0]
    >>> task.subject_id, task.night_label
    ('s01', 'baseline')
    >>> discover_nights(tmp_dir / "nowhere")
    Traceback (most recent call last):
    ...
    sleeplm.errors.CohortInputError: ...
    """
    source = Path(source)
    if source.is_dir():
        tasks = _from_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        tasks = _from_manifest(source)
    elif source.exists():
        raise CohortInputError("the cohort input must be a folder of EDF/BDF files or a CSV manifest (.csv).")
    else:
        raise CohortInputError("the cohort input does not exist; give a folder of recordings or a CSV manifest.")
    if not tasks:
        raise CohortInputError("no EDF/EDF+/BDF recording was found in the cohort input.")
    return tasks
