"""The conversation's tool trace as a file: every question, tool call (arguments and result) and answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_trace_json"]


def write_trace_json(turns: list[dict], path: str | Path) -> Path:
    """Write the conversation's tool trace: one object per turn (question, audience, answer, tool calls...).

    Parameters
    ----------
    turns : JSON-serialisable dicts, e.g. ``{"question": q, "audience": a, **TurnResult.to_dict()}``;
        numpy scalars and arrays are written as numbers and lists, anything else as its text.
    path : output JSON file.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    path.write_text(json.dumps({"turns": turns}, indent=2, default=_json_default), encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, and anything else as its text, so a trace never fails to save."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
