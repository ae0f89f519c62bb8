"""Finding, reading and loading SleepLM checkpoints.

`resolve_checkpoint` turns a hub repo id or a local path into a local file. From the hub it
looks in the Hugging Face cache first (no network), then asks the hub once with a short
timeout (`HUB_TIMEOUT_S`, or `HF_HUB_ETAG_TIMEOUT`) so an unreachable hub costs seconds, not
minutes, and downloads through `huggingface_hub.hf_hub_download` (resumable, cached, with a
progress bar in the terminal and an optional `progress(fraction, text)` callback). The commit
it downloaded and the file's sha256 are recorded in ``$SLEEPLM_CACHE/weights.json``: later
runs ask for that commit and refuse a file whose sha256 changed.
`read_state_dict` accepts the layouts people save: a bare state dict, `{"state_dict": ...}`
(the reference trainer's), `{"model": ...}` and DataParallel's `module.` prefixes. `load_state_dict_checked`
requires every key of our network with the right shape and reports extra keys (the released
file may carry training-only heads, e.g. signal reconstruction) instead of failing on them.
Files are read with `torch.load(weights_only=True)`: no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sleeplm.errors import CheckpointError, ModelUnavailableError
from sleeplm.paths import cache_root

__all__ = [
    "DEFAULT_REPO",
    "DEFAULT_FILENAME",
    "DEFAULT_REVISION",
    "CHECKPOINT_ENV",
    "REVISION_ENV",
    "HUB_TIMEOUT_S",
    "weights_record_path",
    "LoadReport",
    "resolve_checkpoint",
    "read_state_dict",
    "load_state_dict_checked",
    "state_dict_fingerprint",
]

logger = logging.getLogger(__name__)

DEFAULT_REPO = "yang-ai-lab/SleepLM-Base"
DEFAULT_FILENAME = "model_checkpoint.pt"
DEFAULT_REVISION = "main"
CHECKPOINT_ENV = "SLEEPLM_CHECKPOINT"
REVISION_ENV = "SLEEPLM_REVISION"
# Seconds to wait for the hub's first answer: an unreachable hub is given up quickly.
HUB_TIMEOUT_S = 3.0
HASH_CHUNK_BYTES = 8 * 1024 * 1024
Progress = Callable[[float, str], Any]
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
                       revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                       progress: Progress | None = None, sha256: str | None = None) -> Path:
    """A local checkpoint file for `source`: an existing file or folder, or a Hugging Face repo id.

    For a repo id the revision is `revision`, else ``$SLEEPLM_REVISION``, else the commit
    recorded at the first download, else "main". A cached copy is used without network; else
    the hub is asked once (short timeout) and the file downloaded (resumed when a partial
    download exists), reporting ``progress(fraction, text)``. Its sha256 is recorded the first
    time and checked afterwards. With `sha256` (a published pin) a hub file must have exactly
    that hash: another one is deleted from the cache, never recorded, and refused.

    Raises
    ------
    CheckpointError
        `source` looks like a local path that does not exist, or the file's sha256 differs
        from the pinned `sha256` or from the one recorded at its first download.
    ModelUnavailableError
        The hub cannot be reached (or is switched off with HF_HUB_OFFLINE=1) and nothing is cached.

    Examples
    --------
    >>> torch.save({"w": torch.zeros(2)}, tmp_dir / "weights.pt")
    >>> resolve_checkpoint(tmp_dir / "weights.pt") == tmp_dir / "weights.pt"
    True
    >>> resolve_checkpoint(tmp_dir / "missing.pt")
    Traceback (most recent call last):
    ...
    sleeplm.errors.CheckpointError: ...
    """
    local = Path(source).expanduser()
    if local.is_dir():
        local = local / filename
    if local.is_file():
        return local
    text = str(source)
    if not _is_repo_id(text):
        raise CheckpointError(f"No checkpoint file at {text}; check the path, or {_HOW_TO_PASS}.")
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    key = f"{text}/{filename}"
    record = _read_records().get(key, {})
    pinned = revision or os.environ.get(REVISION_ENV) or record.get("revision") or DEFAULT_REVISION
    try:  # the cache first: no network at all
        cached = Path(hf_hub_download(repo_id=text, filename=filename, revision=pinned, cache_dir=cache_dir,
                                      local_files_only=True))
        return _checked(cached, key, pinned, record, sha256)
    except LocalEntryNotFoundError as exc:
        if _offline():
            raise _unavailable(text, filename, exc) from exc
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_TIMEOUT_S)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once at import
    try:
        meta = get_hf_file_metadata(hf_hub_url(text, filename, revision=pinned, endpoint=endpoint), timeout=timeout)
    except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelUnavailableError(f"The Hugging Face hub has no {filename} in {text!r} at revision {pinned!r} "
                                    f"({type(exc).__name__}); check the repo id and revision, or {_HOW_TO_PASS}.") from exc
    except Exception as exc:  # connection refused, DNS, timeout, proxy...: no weights from the hub now
        raise _unavailable(text, filename, exc) from exc
    commit = meta.commit_hash or pinned
    logger.info("downloading %s from %s (revision %s, %s bytes)", filename, text, commit, meta.size)
    try:
        path = Path(hf_hub_download(repo_id=text, filename=filename, revision=commit, cache_dir=cache_dir,
                                    etag_timeout=timeout, endpoint=endpoint, tqdm_class=_progress_bar(progress, filename)))
    except Exception as exc:  # the connection dropped mid-way: the partial file is resumed next time
        raise _unavailable(text, filename, exc) from exc
    return _checked(path, key, commit, record, sha256)


def weights_record_path() -> Path:
    """``$SLEEPLM_CACHE/weights.json``: revision and sha256 of every checkpoint downloaded from the hub.

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_CACHE": str(tmp_dir)}):
    ...     path = weights_record_path()
    >>> path == tmp_dir / "weights.json"
    True
    """
    return cache_root() / "weights.json"


def _read_records() -> dict:
    try:
        records = json.loads(weights_record_path().read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _checked(path: Path, key: str, revision: str, record: dict, expected: str | None = None) -> Path:
    """`path` after comparing its sha256 with the pin `expected`, else with the record (recording it the first time).

    The hash of a 1.5 GB file takes seconds: it is skipped while the file's size and mtime are
    those recorded with the hash (and that hash is the pinned one).
    """
    stat = path.stat()
    if (record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns and record.get("sha256")
            and record["sha256"] == (expected or record["sha256"])):
        return path
    sha256 = _sha256(path)
    if expected and sha256 != expected:
        blob = path.resolve()  # the hub cache links the snapshot name to a blob: both go
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise CheckpointError(f"The downloaded {path.name} has sha256 {sha256}, not the published {expected}; it was "
                              "deleted. The hub served another file than the pinned one: check the repo and revision.")
    if record.get("sha256") and record["sha256"] != sha256 and not expected:
        raise CheckpointError(f"The cached {path.name} has sha256 {sha256}, not the {record['sha256']} recorded when "
                              f"it was first downloaded (revision {record.get('revision')}). Delete the file from the "
                              f"Hugging Face cache to download it again, or {_HOW_TO_PASS}.")
    records = _read_records()
    records[key] = {"revision": record.get("revision") or revision, "sha256": sha256, "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns}
    target = weights_record_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".json.tmp")
        partial.write_text(json.dumps(records, indent=1, sort_keys=True))
        partial.replace(target)
        logger.info("%s: revision %s, sha256 %s recorded in %s", key, records[key]["revision"], sha256, target)
    except OSError as exc:  # a read-only cache: the weights still work, unpinned
        logger.warning("could not record the checkpoint's sha256 (%s)", exc)
    return path


def _progress_bar(progress: Progress | None, filename: str):
    """A tqdm class for huggingface_hub: the terminal bar as usual, and `progress` called on every update."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    if progress is None:
        return None

    class _Reporting(hub_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.received = kwargs.get("initial") or 0  # counted here: a disabled bar (no terminal) keeps no count

        def update(self, n=1):
            self.received += n or 0
            if self.total:
                progress(min(self.received / self.total, 1.0),
                         f"downloading {filename}: {self.received / 1e6:.0f} of {self.total / 1e6:.0f} MB")
            return super().update(n)

    return _Reporting


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _unavailable(repo_id: str, filename: str, exc: Exception) -> ModelUnavailableError:
    why = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face hub could not be reached"
    return ModelUnavailableError(f"SleepLM weights are unavailable: {why} and no cached copy of {repo_id}/{filename} "
                                 f"exists ({type(exc).__name__}). To use SleepLM offline, {_HOW_TO_PASS}.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: bare, `{"state_dict": ...}` or `{"model": ...}`, with or without `module.`.

    Examples
    --------
    >>> torch.save({"model": {"module.w": torch.ones(2)}}, tmp_dir / "wrapped.pt")   # DataParallel-style
    >>> read_state_dict(tmp_dir / "wrapped.pt")
    {'w': tensor([1., 1.])}
    """
    try:
        try:  # memory-mapped: tensors are read from the file as used, not copied into memory first
            payload = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # files in the legacy (pre-zip) format cannot be mapped
            logger.debug("memory-mapped load failed (%s); reading the whole file", exc)
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

    Examples
    --------
    >>> net = nn.Linear(2, 1)
    >>> report = load_state_dict_checked(net, {"weight": torch.ones(1, 2), "bias": torch.zeros(1), "step": torch.ones(1)})
    >>> report.unexpected_keys, net.weight.tolist()
    (['step'], [[1.0, 1.0]])
    >>> load_state_dict_checked(net, {"weight": torch.ones(3, 2)})     # wrong shape, bias missing
    Traceback (most recent call last):
    ...
    sleeplm.errors.CheckpointError: ...
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
    # assign: the network takes the (memory-mapped) checkpoint tensors instead of copying them into its own.
    network.load_state_dict({k: state_dict[k].to(v.dtype) for k, v in expected.items()}, strict=True, assign=True)
    return LoadReport(unexpected_keys=unexpected, source=source)


def state_dict_fingerprint(network: nn.Module) -> str:
    """A short sha256 of the network's weights: identifies a checkpoint in cache keys.

    Examples
    --------
    >>> net = nn.Linear(2, 1)
    >>> before = state_dict_fingerprint(net)
    >>> len(before), before == state_dict_fingerprint(net)
    (16, True)
    >>> with torch.no_grad():
    ...     _ = net.bias.add_(1.0)
    >>> state_dict_fingerprint(net) == before
    False
    """
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
