"""A scan run as many shards on Ray workers (``robust scan ... --workers N``), ending with the merged report.

The driver (this process) splits the scan into ``--shards`` parts (four per worker by default: robust samples cost
the most under a cascade, and many small shards keep every worker busy) and runs them as Ray tasks, in rounds. A
round runs every unfinished shard until it finishes or stops at a decision across the whole set
(evaluation/shards.py); the driver then takes that decision over all the shards' saved states
(evaluation/decisions.py) and starts the next round. When every shard has finished, their reports are merged
(reports/shards.py): the per-sample results equal those of the scan run in one process.

Every shard keeps its own state file in the run folder (``REPORT.shards/``), so a task that dies (a worker killed,
a node lost) is retried by Ray and resumes where its state stops; a driver that dies resumes with ``--resume``. On a
cluster the run folder must be on a file system every node sees (the state files are how work survives a node).
Without Ray, the same driver runs the shards one after another in this process (:func:`run_in_process`), which
the tests use to check the merge for any number of shards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from robustbench_cli import api
from robustbench_cli.config import ScanConfig
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.io import atomic_write_all
from robustbench_cli.evaluation.decisions import decide
from robustbench_cli.evaluation.shards import Barrier, Shard, load_decisions, save_decisions
from robustbench_cli.reports.model import load_report
from robustbench_cli.reports.shards import merge
from robustbench_cli.reports.writers import OutputSpec
from robustbench_cli.targets import load_target

SHARDS_PER_WORKER = 4
RAY_CONNECT_TIMEOUT = 10.0  # seconds to wait for a Ray address to answer
TASK_RETRIES = 3  # a task whose worker dies is run again this many times (it resumes from its state)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ShardJob:
    """One shard's task in one round: plain data, so that it travels to any Ray worker."""

    config: dict  # the ScanConfig of the whole scan, as data
    index: int
    of: int
    folder: str  # the run folder (shared by every node)
    decisions: dict

    @property
    def report(self) -> Path:
        return Path(self.folder) / f"shard-{self.index}-of-{self.of}.json"

    @property
    def state(self) -> Path:
        return self.report.with_name(self.report.name + ".state.npz")

    def progress_file(self) -> Path:
        return Path(self.folder) / "progress" / f"shard-{self.index}.json"


def run_shard(job: ShardJob) -> dict:
    """Run one shard until it finishes (its report written) or stops at a barrier (its state saved)."""
    folder = Path(job.folder)
    (folder / "pids").mkdir(parents=True, exist_ok=True)
    (folder / "pids" / f"shard-{job.index}.pid").write_text(str(os.getpid()))
    if job.report.is_file():  # finished in an earlier attempt (the task died after writing): nothing to redo
        return {"index": job.index, "status": "done"}
    cfg = ScanConfig.from_dict(job.config)
    cfg = replace(cfg, shard=f"{job.index}/{job.of}", workers=None, shards=None, ray_address=None,
                  outputs=OutputSpec((str(job.report),)), resume=job.state.is_file(), gate=None)
    outcome = api.run(cfg, progress=_progress_writer(job.progress_file()), decisions=job.decisions)
    if outcome.barrier is not None:
        return {"index": job.index, "status": "barrier", "barrier": outcome.barrier.to_dict()}
    if outcome.stopped is not None:
        return {"index": job.index, "status": "stopped", "reason": outcome.stopped}
    atomic_write_all([(job.report, outcome.report.to_json())])
    if outcome.state is not None:
        outcome.state.remove()
    return {"index": job.index, "status": "done"}


def _progress_writer(path: Path) -> Progress:
    """Each attack's samples done and planned in this shard, written at most twice a second for the driver."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[str, list[int]] = {}
    last = [0.0]

    def update(desc: str, done: int, total: int) -> None:
        seen[desc] = [done, total]
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            atomic_write_all([(path, json.dumps(seen))])

    return update


# --- executors: where the jobs run ------------------------------------------------------------------------------------
Executor = Callable[[list[ShardJob], Callable[[], None]], list[dict]]


def run_in_process(jobs: list[ShardJob], tick: Callable[[], None]) -> list[dict]:
    """Every job in this process, one after another (no Ray): the same shards, the same merge."""
    out = []
    for job in jobs:
        out.append(run_shard(job))
        tick()
    return out


class RayExecutor:
    """The jobs as Ray tasks: ``workers`` at once, each retried when its worker dies. Made before any work: Ray
    missing or an address that does not answer is one line at once; Ray itself starts on the first round."""

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise UserError('--workers needs Ray, an optional extra: pip install "robust-scan[ray]"') from None
        self.ray, self.workers, self.address = ray, workers, address
        if address is not None:
            check_address(address)
        self.task: Any = None
        self.gpus = 0

    def start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {"num_cpus": self.workers}
            # Ray installs its own SIGTERM handler (it logs and calls sys.exit): keep robust's, which stops the scan
            # as Ctrl-C does, with the shards' progress kept for --resume
            main = threading.current_thread() is threading.main_thread()
            saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
            try:
                ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except ConnectionError as e:
                raise UserError(f"--ray-address {self.address}: no Ray cluster answers there ({e})") from None
            finally:
                for s, handler in saved.items():
                    signal.signal(s, handler)
        self.gpus = int(ray.cluster_resources().get("GPU", 0))  # one GPU per task when the cluster has them
        self.task = ray.remote(max_retries=TASK_RETRIES)(run_shard)

    def __call__(self, jobs: list[ShardJob], tick: Callable[[], None]) -> list[dict]:
        if self.task is None:
            self.start()
        options = {"num_gpus": 1} if self.gpus else {}
        refs = {self.task.options(**options).remote(job): job for job in jobs}
        out, waiting = [], list(refs)
        while waiting:
            ready, waiting = self.ray.wait(waiting, num_returns=1, timeout=0.5)
            tick()
            for ref in ready:
                try:
                    out.append(self.ray.get(ref))
                except self.ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    if isinstance(cause, UserError):
                        raise UserError(str(cause).split("\n")[-1] or str(cause)) from None
                    raise
                except self.ray.exceptions.WorkerCrashedError:
                    raise UserError(f"shard {refs[ref].index}/{refs[ref].of}: its worker died {TASK_RETRIES + 1} "
                                    "times; the progress is kept, run the same command with --resume") from None
        return out


def check_address(address: str) -> None:
    """A Ray address that does not answer is one line, within seconds, not a hang."""
    if address == "auto" or address.startswith("local"):
        return
    url = urlparse(address if "://" in address else f"ray://{address}")
    host, port = url.hostname, url.port
    if not host or not port:
        raise UserError(f"--ray-address {address!r}: give HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise UserError(f"--ray-address {address}: nothing answers at {host}:{port} ({e.strerror or e})") from None


# --- the driver --------------------------------------------------------------------------------------------------------
def run_workers(cfg: ScanConfig, progress: Progress | None = None, executor: Executor | None = None) -> api.ScanOutcome:
    """Run ``cfg`` as shards on Ray (or ``executor``) and return the merged report. The run folder sits next to the
    first report; it is removed once the merged report is returned to the caller (who writes it)."""
    if cfg.workers is None:
        raise UserError("run_workers needs --workers")
    run = executor or RayExecutor(cfg.workers, cfg.ray_address)  # Ray there and the address answering, first
    cfg.outputs.paths()
    cfg.run.apply_threads()
    data = cfg.data.load(cfg.run.seed)
    loaded = [load_target(s) for s in cfg.targets]  # the decisions' certificates run on them here
    api.check_batch_independent(cfg.run, loaded, data)
    targets = {t.name: t for t in loaded}
    count = max(1, min(cfg.shards or SHARDS_PER_WORKER * cfg.workers, len(data)))
    folder = run_folder(cfg)
    if cfg.resume:
        if not folder.is_dir():
            raise UserError(f"--resume: no run folder at {folder} (it is kept while a sharded scan runs)")
        plan = _read_plan(folder)
        if plan.get("shards") != count or plan.get("config") != _plan_config(cfg):
            raise UserError(f"--resume: {folder} belongs to another sharded scan (other options or --shards); run "
                            "the same command, or delete the folder to start over")
    else:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        atomic_write_all([(folder / "plan.json", json.dumps({"shards": count, "config": _plan_config(cfg)}))])
    decisions = load_decisions(folder / "decisions.json")
    try:
        return _rounds(cfg, run, folder, count, data, targets, decisions, progress)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every finished shard and every shard state stays in the folder
        raise Interrupted(folder) from None


class Interrupted(Exception):
    """A sharded scan stopped by Ctrl-C or SIGTERM; its run folder holds everything for ``--resume``."""

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.folder = folder


def _rounds(cfg: ScanConfig, run: Executor, folder: Path, count: int, data, targets: dict, decisions: dict,
            progress: Progress | None) -> api.ScanOutcome:
    """Rounds of shard tasks, each followed by the decision they stopped for, then the merged report."""
    pending = list(range(1, count + 1))
    tick = _ticker(folder, progress)
    while pending:
        jobs = [ShardJob(cfg.to_dict(), i, count, str(folder), dict(decisions)) for i in pending]
        results = run(jobs, tick)
        stopped = [r for r in results if r["status"] == "stopped"]
        if stopped:
            raise UserError(f"shard {stopped[0]['index']}/{count} stopped ({stopped[0]['reason']}); the progress is "
                            "kept: run the same command with --resume")
        barriers = {Barrier.from_dict(r["barrier"]).key: Barrier.from_dict(r["barrier"])
                    for r in results if r["status"] == "barrier"}
        pending = sorted(r["index"] for r in results if r["status"] == "barrier")
        if not pending:
            break
        if len(barriers) != 1:
            raise RuntimeError(f"the shards stopped at different decisions: {sorted(barriers)}")
        barrier = next(iter(barriers.values()))
        states = [(Shard(i, count), ShardJob({}, i, count, str(folder), {}).state) for i in range(1, count + 1)]
        decisions[barrier.key] = decide(barrier, states, data, targets, cfg.run)
        save_decisions(folder / "decisions.json", decisions)
    parts = [ShardJob({}, i, count, str(folder), {}).report for i in range(1, count + 1)]
    merged = merge([(str(p), load_report(p)) for p in parts])
    merged.options = {**merged.options, "shard": None}
    merged.provenance = {**merged.provenance, "merged": {**merged.provenance.get("merged", {}),
                                                         "files": [p.name for p in parts], "workers": cfg.workers}}
    outcome = api.ScanOutcome(api.ScanReport.of(merged))
    outcome.state = _Folder(folder)
    return outcome


class _Folder:
    """The run folder, removed like a state file once the merged reports are written."""

    def __init__(self, path: Path):
        self.path = path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def run_folder(cfg: ScanConfig) -> Path:
    first = Path(cfg.outputs.reports[0]).expanduser()
    return first.with_name(first.name + ".shards")


def _plan_config(cfg: ScanConfig) -> dict:
    """What must match for a run folder to be resumed: the scan, not where its reports go or how many workers."""
    data = cfg.to_dict()
    for k in ("outputs", "resume", "workers", "ray_address", "gate"):
        data.pop(k, None)
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _read_plan(folder: Path) -> dict:
    try:
        return json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _ticker(folder: Path, progress: Progress | None) -> Callable[[], None]:
    """Sum every shard's progress file into one line: attack-samples done over those planned so far."""
    if progress is None:
        return lambda: None

    def tick() -> None:
        done = total = 0
        for f in _files(folder / "progress"):
            try:
                seen = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            done += sum(int(d) for d, _ in seen.values())
            total += sum(int(t) for _, t in seen.values())
        progress("all shards (attack x sample)", done, total)

    return tick


def _files(folder: Path) -> Iterable[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
