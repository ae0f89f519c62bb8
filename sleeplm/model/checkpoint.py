"""Finding, reading and loading SleepLM checkpoints.

`resolve_checkpoint` turns a hub repo id or a local path into a local file (the hub through
`huggingface_hub.hf_hub_download`, which honours its cache, `revision` and `HF_HUB_OFFLINE`).
`read_state_dict` accepts the layouts people save: a bare state dict, `{"state_dict": ...}`
(the reference trainer's), `{"model": ...}` and DataParallel's `module.` prefixes. `load_state_dict_checked`
requires every key of our network with the right shape and reports extra keys (the released
file may carry training-only heads, e.g. signal reconstruction) instead of failing on them.
Files are read with `torch.load(weights_only=True)`: no pickled code runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sleeplm.errors import CheckpointError, ModelUnavailableError

__all__ = [
    "DEFAULT_REPO",
    "DEFAULT_FILENAME",
    "CHECKPOINT_ENV",
    "LoadReport",
    "resolve_checkpoint",
    "read_state_dict",
    "load_state_dict_checked",
    "state_dict_fingerprint",
]

logger = logging.getLogger(__name__)

DEFAULT_REPO = "yang-ai-lab/SleepLM-Base"
DEFAULT_FILENAME = "model_checkpoint.pt"
CHECKPOINT_ENV = "SLEEPLM_CHECKPOINT"
_HOW_TO_PASS = (f"download {DEFAULT_FILENAME} from https://huggingface.co/{DEFAULT_REPO} on a connected machine "
                f"and pass it with --checkpoint PATH or the environment variable {CHECKPOINT_ENV}=PATH")
_LIST_LIMIT = 20
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass
class LoadReport:
    """What loading a state dict found: keys the network ignored (extra) and the source file."""

    unexpected_keys: list[str] = field(default_factory=list)
    source: str = ""


def _is_repo_id(source: str) -> bool:
    """`owner/name` as the hub spells it (a local path has other slashes, a dot start or a file suffix)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) is not None and not source.endswith(_FILE_SUFFIXES)


def resolve_checkpoint(source: str | os.PathLike = DEFAULT_REPO, filename: str = DEFAULT_FILENAME,
                       revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local checkpoint file for `source`: an existing file or folder, or a Hugging Face repo id.

    Raises
    ------
    CheckpointError
        `source` looks like a local path that does not exist.
    ModelUnavailableError
        The hub cannot be reached (or is switched off with HF_HUB_OFFLINE=1) and nothing is cached.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        local = local / filename
    if local.is_file():
        return local
    text = str(source)
    if not _is_repo_id(text):
        raise CheckpointError(f"No checkpoint file at {text}; check the path, or {_HOW_TO_PASS}.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=text, filename=filename, revision=revision, cache_dir=cache_dir))
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        if isinstance(exc, LocalEntryNotFoundError):  # offline or unreachable, and not in the cache
            raise _unavailable(text, filename, exc) from exc
        raise ModelUnavailableError(f"The Hugging Face hub has no {filename} in {text!r} ({type(exc).__name__}); "
                                    f"check the repo id, or {_HOW_TO_PASS}.") from exc
    except Exception as exc:  # network errors of any kind: no weights here
        raise _unavailable(text, filename, exc) from exc


def _unavailable(repo_id: str, filename: str, exc: Exception) -> ModelUnavailableError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub could not be reached"
    return ModelUnavailableError(f"SleepLM weights are unavailable: {why} and no cached copy of {repo_id}/{filename} "
                                 f"exists ({type(exc).__name__}). To use SleepLM offline, {_HOW_TO_PASS}.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: bare, `{"state_dict": ...}` or `{"model": ...}`, with or without `module.`."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"Cannot read checkpoint {Path(path).name}: {exc}. It must be a PyTorch state dict "
                              "saved with torch.save (tensors only).") from exc
    for wrapper in ("state_dict", "model"):  # the reference trainer's wrapper, then a common training-script one
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
            break
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"Checkpoint {Path(path).name} holds no state dict (found {type(payload).__name__}).")
    tensors = {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"Checkpoint {Path(path).name} holds no tensors.")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > _LIST_LIMIT else "")


def load_state_dict_checked(network: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "") -> LoadReport:
    """Load `state_dict` into `network`, requiring every network key with its exact shape.

    Raises
    ------
    CheckpointError
        Missing keys or shape mismatches (each listed), e.g. a checkpoint of another model size.
    """
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    mismatched = [f"{k} (checkpoint {tuple(state_dict[k].shape)}, network {tuple(v.shape)})"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched)}")
        raise CheckpointError(f"Checkpoint {source or ''} does not fit the SleepLM network: " + "; ".join(parts)
                              + ". Use the checkpoint that matches the model config (released: "
                                "sleep_coca_base_dualtransformer with 5 caption channels, prefix length 2).")
    unexpected = sorted(k for k in state_dict if k not in expected)
    if unexpected:
        logger.warning("Checkpoint has %d key(s) the network does not use (ignored): %s",
                       len(unexpected), _listed(unexpected))
    network.load_state_dict({k: state_dict[k] for k in expected}, strict=True)
    return LoadReport(unexpected_keys=unexpected, source=source)


def state_dict_fingerprint(network: nn.Module) -> str:
    """A short sha256 of the network's weights: identifies a checkpoint in cache keys."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
