"""`run`: every night of a cohort through load -> measurements -> (SleepLM) on Ray Data.

The nights are a Ray Dataset with one block per night, largest file first. Measuring is a `map` task per night
(one CPU each, `workers` at a time); with SleepLM weights, embeddings and captions follow in an
actor pool (`model_workers` actors, each loading the weights once, `gpus_per_worker` GPUs each).
Results stream back to the driver as nights finish, which drives the progress bar; the tables
are gathered at the end (`sleeplm.cohort.tables.write_tables`).

Ray: local by default (started with the machine's CPUs, no set-up, shut down at the end), or
an existing cluster with ``address`` (``"ray://head:10001"`` through Ray Client, or ``"auto"`` /
``"host:6379"`` on a cluster node). A Ray session that is already running in the process is used
as it is and left running. On a cluster, DIR and the recordings must be on storage that every
node sees at the same path (NFS, a mounted bucket), and the project installed on every node.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from sleeplm.cohort.inputs import discover_nights
from sleeplm.cohort.night import EMBEDDINGS, FAILURES, PARTS, RESULT_COLUMNS, TMP_PREFIX, SleepLMStage, measure_night
from sleeplm.cohort.report import REPORT, write_report
from sleeplm.cohort.tables import CohortTables, cohort_salt, load_cohort, write_tables
from sleeplm.errors import CohortRunError, MeasurementError
from sleeplm.measure.rules import resolve_rule

__all__ = ["run", "checkpoint_loader"]

logger = logging.getLogger(__name__)


def checkpoint_loader(path: str, precision: str | None = None) -> Callable[[], Any]:
    """A picklable loader of the SleepLM checkpoint `path` in `precision`.

    The precision is resolved here, in this process (``$SLEEPLM_PRECISION`` when None or "auto"
    and set), and travels with the loader: SleepLM actors on any cluster load the same file in
    the same precision, whatever their own environment holds.

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SLEEPLM_PRECISION": "bf16"}):
    ...     checkpoint_loader("weights.pt").keywords, checkpoint_loader("weights.pt", "int8").keywords
    ({'precision': 'bf16'}, {'precision': 'int8'})
    """
    from sleeplm.model.inference import SleepLM
    from sleeplm.model.precision import requested_precision

    return functools.partial(SleepLM.from_pretrained, str(path), precision=requested_precision(precision))


def _model_loader(model: Any, precision: str | None = None) -> tuple[Callable[[], Any] | None, str | None]:
    """A picklable loader of the SleepLM weights and the weights' id (part of each night id)."""
    if model is None:
        return None, None
    if callable(model):
        loaded = model()
        return model, loaded.checkpoint_id
    loader = checkpoint_loader(model, precision)
    return loader, loader().checkpoint_id  # fails here, before any night, when the file is wrong


def _clean_leftovers(out: Path) -> None:
    """Remove the temporary folders and files a killed run left behind."""
    for folder in (out / PARTS, out / EMBEDDINGS, out / FAILURES, out):
        if folder.is_dir():
            for path in folder.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _start_ray(address: str | None, num_cpus: int | None):
    """(ray module, True when this call started the session and must shut it down)."""
    import ray

    if ray.is_initialized():
        return ray, False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CohortRunError(f"Ray could not start or reach the cluster at {address or 'local'} ({exc}).") from None
    return ray, True


def _size(task) -> int:
    """The recording's size in bytes (0 when it cannot be read: its error is reported by its task)."""
    try:
        return os.path.getsize(task.path)
    except OSError:
        return 0


# The DataContext settings `run` changes for its own dataset (and puts back afterwards).
_CONTEXT_SETTINGS = ("enable_progress_bars", "max_errored_blocks", "op_resource_reservation_enabled")


def _tasks_in_flight(workers: int, cpus: int, nights: int) -> int:
    """Measuring tasks Ray Data keeps submitted at once for `workers` nights measured at a time.

    Ray Data's scheduling loop notices a finished task only after waiting up to 0.1 s for all of
    the tasks in flight (``ray.wait`` for every one, with a timeout), then fetches its metadata on
    another thread: with two one-CPU nights on two CPUs, every next night started 0.1-0.3 s after
    a CPU was free (a ~1.9-s night: up to 15 % of the run). When the nights may use every CPU, one
    more night per CPU is kept submitted: it waits in Ray's own queue, which starts it within
    milliseconds of a CPU freeing, even when two CPUs free at once (with a single spare night the
    second one still waited for the loop), and the CPUs (one per night) still bound the nights
    measured at once. With fewer workers than CPUs nothing more is submitted: the extra nights
    would start on the free CPUs.

    Examples
    --------
    >>> _tasks_in_flight(workers=2, cpus=2, nights=6), _tasks_in_flight(workers=1, cpus=2, nights=6)
    (4, 1)
    >>> _tasks_in_flight(workers=8, cpus=2, nights=6), _tasks_in_flight(workers=2, cpus=2, nights=3)
    (6, 3)
    """
    in_flight = workers + cpus if workers >= cpus else workers
    return max(1, min(in_flight, nights))


def _measure_task_args() -> dict:
    """Remote arguments of each measuring task: a night whose worker died is tried once more, then reported."""
    return {"max_retries": 1}


class _Progress:
    """tqdm bar of nights: done / failed / remaining and the rate (nights per minute)."""

    def __init__(self, total: int, enabled: bool):
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.total = total
        self.started = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="night", file=sys.stderr, dynamic_ncols=True)

    def update(self, status: str) -> None:
        self.counts[status] += 1
        if self.bar is None:
            return
        finished = sum(self.counts.values())
        minutes = (time.perf_counter() - self.started) / 60
        self.bar.set_postfix_str(
            f"done {self.counts['done'] + self.counts['skipped']} (resumed {self.counts['skipped']}), "
            f"failed {self.counts['failed']}, remaining {self.total - finished}, "
            f"{self.counts['done'] / minutes if minutes else 0:.1f} nights/min", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(source, out_dir, address: str | None = None, num_cpus: int | None = None, workers: int | None = None,
        model: Any = None, gpus_per_worker: float = 0, model_workers: int | None = None,
        hypopnea_rule: str = "1A", progress: bool = False, retry_failed: bool = False,
        precision: str | None = None) -> CohortTables:
    """Process every night of a cohort into DIR and return its tables.

    Parameters
    ----------
    source : a folder (searched recursively for EDF/EDF+/BDF) or a CSV manifest
        (see `sleeplm.cohort.inputs`).
    out_dir : the cohort folder DIR (created; a folder of an earlier run is resumed: nights
        already done are skipped, and so are nights that failed, see `retry_failed`).
    address : Ray cluster address (``"ray://head:10001"``, ``"auto"``); None starts local Ray.
    num_cpus : CPUs of the local Ray session (default: the machine's).
    workers : nights measured at the same time (default: all CPUs of the Ray cluster).
    model : SleepLM weights (a checkpoint path, or a picklable callable returning a `SleepLM`);
        None skips embeddings and captions.
    gpus_per_worker : GPUs per SleepLM actor (0: CPU actors).
    model_workers : SleepLM actors (default: as many as fit: GPUs / gpus_per_worker, else 1).
    hypopnea_rule : the scoring rule, a name or alias of `sleeplm.measure.rules.RULES` ("1A" AASM recommended,
        "1B" the 4 % rule, "shhs"...).
    progress : show a progress bar on stderr.
    retry_failed : measure again the nights an earlier run of DIR recorded as failed (by default
        they are reported failed again without being re-read: same content and options, same
        failure; see `sleeplm.cohort.night`).
    precision : the SleepLM encoder's precision for a checkpoint path: "auto", "fp32", "bf16" or
        "int8"; None: ``$SLEEPLM_PRECISION`` of this process, else auto. Passed to every SleepLM
        actor with the path (`checkpoint_loader`: a remote cluster's workers do not see this
        process's environment); a callable `model` chooses its own.

    Returns
    -------
    `CohortTables` (the same as ``load_cohort(out_dir)``).

    Raises
    ------
    CohortInputError : the input is not a folder of recordings or a valid manifest.
    CohortRunError : bad options or an unreachable Ray cluster.

    Examples
    --------
    >>> run(tmp_dir / "no-such-study", tmp_dir / "out")        # inputs are checked before Ray starts
    Traceback (most recent call last):
    ...
    sleeplm.errors.CohortInputError: ...
    >>> run(tmp_dir, tmp_dir / "out", hypopnea_rule="2C")
    Traceback (most recent call last):
    ...
    sleeplm.errors.CohortRunError: unknown scoring rule '2C'; use one of: chicago-1999, aasm-2007-recommended, aasm-2007-alternative, 1A, 1B, shhs, aasm-v3 (aliases: 3%, 4%, cms, current).
    """
    try:
        hypopnea_rule = resolve_rule(hypopnea_rule).name
    except MeasurementError as exc:
        raise CohortRunError(str(exc)) from exc
    for name, value in (("workers", workers), ("num_cpus", num_cpus), ("model_workers", model_workers)):
        if value is not None and int(value) < 1:
            raise CohortRunError(f"{name} must be at least 1, not {value}.")
    if gpus_per_worker < 0:
        raise CohortRunError(f"gpus_per_worker must be 0 or more, not {gpus_per_worker}.")
    tasks = discover_nights(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    _clean_leftovers(out)
    salt = cohort_salt(out)
    loader, model_id = _model_loader(model, precision)
    ray, started = _start_ray(address, num_cpus)
    bar = _Progress(len(tasks), progress)
    from ray.data import DataContext

    context = DataContext.get_current()  # process-wide: the settings below are restored after the run
    saved = {name: getattr(context, name) for name in _CONTEXT_SETTINGS}
    try:
        context.enable_progress_bars = False
        context.max_errored_blocks = -1  # a worker that dies loses its night, not the run (it is reported below)
        # Ray Data reserves part of the CPUs per operator by default; with one night per task that
        # left a worker idle (a second night started ~1 s after the first, then every next night
        # ~0.2 s after a worker was free: 4 x 1.5-s tasks on 2 CPUs took 4.3 s, not 3.1 s). The
        # SleepLM actors hold their CPUs from the start, so nothing needs the reservation here.
        context.op_resource_reservation_enabled = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = ray.cluster_resources().get("GPU", 0)
        # Largest files first: the longest nights start early, so the run does not end on one
        # worker finishing a long night while the others idle (the tables are sorted by night id).
        dataset = ray.data.from_items([t.to_row() for t in sorted(tasks, key=_size, reverse=True)],
                                      override_num_blocks=len(tasks))
        # A ray_remote_args_fn also keeps Ray Data from fusing the measuring into the SleepLM actor
        # pool, which would then measure only `model_workers` nights at a time.
        # (ray_remote_args_fn is deprecated from Ray 2.60, removed in 2.64: pyproject pins below 2.64.
        # Ray 2.60 has no replacement for it here: map()'s named remote parameters (num_cpus, memory,
        # max_calls, resources, ...) have no max_retries, **ray_remote_args is deprecated as well, and
        # Ray Data's own default, max_retries=-1, would retry forever a night that kills its worker.)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*deprecated")
            dataset = dataset.map(measure_night, num_cpus=1, ray_remote_args_fn=_measure_task_args,
                                  compute=ray.data.TaskPoolStrategy(size=_tasks_in_flight(workers or cpus, cpus, len(tasks))),
                                  fn_kwargs={"out_dir": str(out.resolve()), "salt": salt,
                                             "hypopnea_rule": hypopnea_rule, "model_id": model_id,
                                             "finalize": loader is None, "retry_failed": retry_failed})
        if loader is not None:
            actors = model_workers or (max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1)
            dataset = dataset.map(SleepLMStage, compute=ray.data.ActorPoolStrategy(size=actors),
                                  num_gpus=gpus_per_worker, num_cpus=0 if gpus_per_worker else 1,
                                  fn_constructor_kwargs={"out_dir": str(out.resolve()), "load_model": loader})
        results = []
        for row in dataset.iter_rows():
            row = {key: row.get(key) for key in RESULT_COLUMNS}
            results.append(row)
            bar.update(row["status"])
    finally:
        bar.close()
        for name, value in saved.items():
            setattr(context, name, value)
        if started:
            ray.shutdown()
    reported = {r["file"] for r in results}
    # A night whose task never reported back: its worker died (killed, out of memory) twice, or Ray
    # could not run the task at all (e.g. a worker without the project installed); the night's own
    # errors are caught inside its task and reported as rows.
    for task in tasks:
        if task.path not in reported:
            results.append({"file": task.path, "night_id": None, "subject_id": None, "night_label": task.night_label,
                            "status": "failed", "error_class": "WorkerLost",
                            "message": "the Ray task measuring this night never reported back: its worker died "
                                       "(killed or out of memory), or Ray could not run the task (Ray's log says why)"})
    write_tables(out, results)
    cohort = load_cohort(out)
    write_report(cohort.nights, out / REPORT)
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    logger.info("cohort: %d nights done, %d resumed, %d failed", counts["done"], counts["skipped"], counts["failed"])
    return cohort
