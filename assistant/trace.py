"""The conversation's tool trace as a file: every question, tool call (arguments and result) and answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_trace_json", "trace_metadata"]


def write_trace_json(turns: list[dict], path: str | Path, metadata: dict | None = None) -> Path:
    """Write the conversation's tool trace: one object per turn (question, audience, answer, tool calls...).

    Parameters
    ----------
    turns : JSON-serialisable dicts, e.g. ``{"question": q, "audience": a, **TurnResult.to_dict()}``;
        numpy scalars and arrays are written as numbers and lists, anything else as its text.
    path : output JSON file.
    metadata : how the answers were computed (`trace_metadata`), written as ``"metadata"`` before the turns.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    record = ({"metadata": metadata} if metadata is not None else {}) | {"turns": turns}
    path.write_text(json.dumps(record, indent=2, default=_json_default), encoding="utf-8")
    return path


def trace_metadata(sleeplm: Any) -> dict:
    """The trace's metadata: the SleepLM encoder's precision and why (`sleeplm.model.precision.PrecisionChoice`),
    or null when the session has no SleepLM weights."""
    choice = getattr(sleeplm, "precision", None)
    return {"sleeplm_precision": choice.to_dict() if choice is not None else None}


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, and anything else as its text, so a trace never fails to save."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
