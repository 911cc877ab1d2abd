"""A scan's per-sample progress on disk, so that an interrupted scan resumes instead of starting over.

The state file sits next to the first report (``report.json.state.npz``). It is a plain ``.npz`` (read with
``allow_pickle=False``: loading it runs no code) holding, for every target and threat model, the result arrays so
far and, per attack of the cascade, which samples it was given and which batches it finished. It is rewritten
atomically (temporary file, then rename) after a batch whenever the time since the last write is at least 20
times what that write took (so saving costs at most ~5% of the scan: after every batch for small scans, less
often when adversarial examples are kept), and at once when the scan stops (Ctrl-C, a spent ``--time-budget``);
a ``kill -9`` loses only the batches since the last write.

``robust scan ... --resume`` reloads it and runs only the work left. The attacks draw from per-sample random
streams, so a resumed scan gives the same per-sample results as one that never stopped, whatever the batches.
A state written by a different scan (other models, data, threat models, battery, seed, goal or budget) is refused
with the keys that differ. The checksum catches damage, not intent (its recipe is public), so every first break's
candidate is appended to a file beside the state (``.cand``, float32 rows), and the cascade verifies each restored
break again on the model before it trusts it. A finished scan deletes its state files: the report holds everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.folders import read_rows, write_rows
from robustbench_cli.core.results import AttackOutcome, ThreatResult

VERSION = 3  # 2: the header carries a checksum of the arrays; 3: every break's candidate is kept (re-verified)
# the per-sample arrays of a ThreatResult a state keeps (broken_by is kept as indices into the attack labels)
RESULT_ARRAYS = ("robust", "adv_pred", "distance", "queries", "queries_at_break", "min_distance", "adversarial",
                 "certified", "best_margin", "nonfinite", "lowprec", "cand_row")


def state_path_for(report: Path) -> Path:
    return report.with_name(report.name + ".state.npz")


def fingerprint(**parts) -> dict:
    """What must match for a state to be resumed: a JSON-able dict, compared key by key."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def _checksum(fp: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the scan's fingerprint and every array (name, dtype, shape, bytes): a state file edited by hand
    or damaged on disk is refused rather than trusted."""
    h = hashlib.sha256(json.dumps(fp, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A state file's header and arrays, or one line saying why it cannot be read."""
    if not path.is_file():
        raise UserError(f"--resume: no state file at {path} (it is written next to the first report "
                        "while a scan runs, and deleted when the scan finishes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in z.files if k != "header"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise UserError(f"--resume: the state file {path} cannot be read ({e}); delete it to start over") from None
    if header.get("version") != VERSION:
        raise UserError(f"--resume: {path} has state version {header.get('version')}, this robust writes {VERSION}")
    return header, arrays


def _units(header: dict, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {key: {k[len(f"{i}/"):]: v for k, v in arrays.items() if k.startswith(f"{i}/")}
            for i, key in enumerate(header["units"])}


def read_units(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The per-(target, threat) arrays of a state file, checked against its own checksum (a shard's state, read by
    the driver that takes the decisions across the whole set: shards.py)."""
    header, arrays = _read(Path(path))
    if header.get("checksum") != _checksum(header.get("fingerprint", {}), arrays):
        raise UserError(f"the state file {path} fails its checksum (edited or damaged); delete it to start over")
    return _units(header, arrays)


class ScanState:
    def __init__(self, path: Path, fp: dict, *, resume: bool, overhead: float = 0.05):
        self.path = Path(path)
        self.fp = fp
        self.overhead = overhead  # the share of the scan's time that saving may take
        self._cost = 0.0  # seconds the last write took
        self.units: dict[str, dict[str, np.ndarray]] = {}
        self._last = time.monotonic()
        self._dirty = False
        # every first break's candidate, appended as float32 rows to a file beside the state (bounded memory); the
        # state's arrays say which row is whose, and a resumed scan re-verifies each on the model
        self.cand_path = self.path.with_name(self.path.name + ".cand")
        self._cand_fd: int | None = None
        self._cand_rows = 0
        self._cand_shape: tuple[int, ...] | None = None
        if resume:
            self._load()
        else:  # written at once: an interrupt before the first batch still leaves a state to resume from
            self.cand_path.unlink(missing_ok=True)
            self._dirty = True
            self.flush()

    # --- reading ---------------------------------------------------------------------------------
    def _load(self) -> None:
        header, arrays = _read(self.path)
        theirs = header.get("fingerprint", {})
        differ = sorted(k for k in set(theirs) | set(self.fp) if theirs.get(k) != self.fp.get(k))
        if differ:
            raise UserError(f"--resume: {self.path} was written by a different scan (differs in: {', '.join(differ)}); "
                            "run the same command, or delete the state file to start over")
        if header.get("checksum") != _checksum(self.fp, arrays):
            raise UserError(f"--resume: the state file {self.path} fails its checksum (edited or damaged); delete it "
                            "to start over")
        self.units = _units(header, arrays)
        self._cand_rows = int(header.get("cand_rows", 0))
        shape = header.get("cand_shape")
        self._cand_shape = tuple(shape) if shape else None
        if self._cand_rows:
            size = self.cand_path.stat().st_size if self.cand_path.is_file() else 0
            if size < self._cand_rows * self._row_bytes():
                raise UserError(f"--resume: the candidates beside the state ({self.cand_path}) are missing or cut "
                                "short; delete the state file to start over")

    # --- the candidates of the breaks ------------------------------------------------------------
    def _row_bytes(self) -> int:
        return int(np.prod(self._cand_shape or ())) * 4

    def _fd(self) -> int:
        if self._cand_fd is None:
            self.cand_path.parent.mkdir(parents=True, exist_ok=True)
            self._cand_fd = os.open(self.cand_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._cand_fd

    def add_candidates(self, x: np.ndarray) -> np.ndarray:
        """Append candidates (float32 rows); their row numbers."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._cand_shape is None:
            self._cand_shape = tuple(int(d) for d in x.shape[1:])
        rows = np.arange(self._cand_rows, self._cand_rows + len(x), dtype=np.int64)
        if len(x):
            write_rows(self._fd(), x, self._cand_rows)
            self._cand_rows += len(x)
        return rows

    def read_candidates(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        bad = rows[(rows < 0) | (rows >= self._cand_rows)]
        if len(bad):
            raise UserError(f"--resume: the state names candidate row {int(bad[0])} of {self._cand_rows}; delete it "
                            "to start over")
        return read_rows(self._fd(), rows, self._cand_shape or ())

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        return self.units.get(key)

    # --- writing ---------------------------------------------------------------------------------
    def put(self, key: str, arrays: dict[str, np.ndarray], *, force: bool = False) -> None:
        self.units[key] = arrays
        self._dirty = True
        if force or time.monotonic() - self._last >= self._cost / self.overhead:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        t0 = time.monotonic()
        keys = list(self.units)
        arrays = {f"{i}/{name}": np.asarray(a) for i, key in enumerate(keys) for name, a in self.units[key].items()}
        if self._cand_fd is not None:  # the rows the state names are on disk before the state names them
            os.fsync(self._cand_fd)
        header = {"version": VERSION, "fingerprint": self.fp, "units": keys, "checksum": _checksum(self.fp, arrays),
                  "cand_rows": self._cand_rows, "cand_shape": list(self._cand_shape or [])}
        payload: dict[str, Any] = {"header": np.array(json.dumps(header)), **arrays}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._last = time.monotonic()
        self._cost = self._last - t0
        self._dirty = False

    def remove(self) -> None:
        if self._cand_fd is not None:
            os.close(self._cand_fd)
            self._cand_fd = None
        self.path.unlink(missing_ok=True)
        self.cand_path.unlink(missing_ok=True)

    def discard_if_empty(self) -> None:
        """Remove the file of a scan that failed before recording anything (a failed run leaves nothing behind)."""
        if not self.units:
            self.remove()

    # --- one (target, threat) at a time --------------------------------------------------------------
    def restore(self, unit: str, res: ThreatResult, labels: list[str]) -> dict | None:
        """Put a saved (target, threat) back into ``res``; the saved arrays, or None when nothing is saved."""
        saved = self.get(unit)
        if saved is None:
            return None
        if [str(v) for v in saved["labels"]] != labels:
            raise UserError(f"--resume: the state's attacks for {unit} ({', '.join(map(str, saved['labels']))}) are "
                            f"not this battery's ({', '.join(labels)})")
        for name in RESULT_ARRAYS:
            if name in saved and getattr(res, name) is not None:
                getattr(res, name)[...] = saved[name]
        res.broken_by = [labels[c] if c >= 0 else None for c in saved["broken_by"].tolist()]
        if "certificate" in saved:
            res.certificate = json.loads(str(saved["certificate"]))
        return saved

    def record(self, unit: str, res: ThreatResult, labels: list[str], j: int, outcome: AttackOutcome | None,
               seconds: float, *, force: bool = False, final: bool = False) -> None:
        """Save the (target, threat)'s progress: ``j`` attacks finished, and ``outcome``'s partial work if given.
        ``final``: ``outcome`` (the ``j``-th attack) has finished or was skipped: it is kept as it ended (skip reason,
        robust accuracy after it) and ``j + 1`` attacks are finished, so a resumed scan restores it as it was instead
        of deciding again on later results."""
        old = self.get(unit) or {}
        arrays = {k: v for k, v in old.items() if k.startswith("e")}  # earlier attacks' records stay
        arrays.update({name: getattr(res, name).copy() for name in RESULT_ARRAYS if getattr(res, name) is not None})
        arrays["broken_by"] = np.array([labels.index(b) if b is not None else -1 for b in res.broken_by],
                                       dtype=np.int64)
        arrays["labels"] = np.array(labels)
        arrays["entries_done"] = np.array(j if outcome is None else j + 1 if final else int(old.get("entries_done", 0)))
        if res.certificate is not None:
            arrays["certificate"] = np.array(json.dumps(res.certificate))
        if outcome is not None:  # an outcome of the cascade (_Run._new_entry made its arrays)
            assert outcome.attempted_mask is not None and outcome.done_mask is not None
            assert outcome.broken_mask is not None and outcome.queries is not None
            arrays[f"e{j}/attempted"] = outcome.attempted_mask.copy()
            arrays[f"e{j}/done"] = outcome.done_mask.copy()
            arrays[f"e{j}/broken"] = outcome.broken_mask.copy()
            arrays[f"e{j}/queries"] = outcome.queries.copy()
            arrays[f"e{j}/meta"] = np.array([outcome.broken, seconds], dtype=np.float64)
            if final:
                arrays[f"e{j}/final"] = np.array(np.nan if outcome.robust_after is None else outcome.robust_after)
                arrays[f"e{j}/skipped"] = np.array(outcome.skipped or "")
        self.put(unit, arrays, force=force)

    def resume_outcome(self, saved: dict | None, j: int, outcome: AttackOutcome) -> tuple[float, bool] | None:
        """Restore the ``j``-th attack's work into ``outcome``: (its seconds so far, whether it had ended: finished
        or skipped, restored as it ended), or None if nothing was saved."""
        if saved is None or f"e{j}/attempted" not in saved:
            return None
        for name in ("attempted_mask", "done_mask", "broken_mask", "queries"):
            getattr(outcome, name)[:] = saved[f"e{j}/{name.replace('_mask', '')}"]
        outcome.broken = int(saved[f"e{j}/meta"][0])
        final = f"e{j}/final" in saved
        if final:
            after = float(saved[f"e{j}/final"])
            outcome.robust_after = None if np.isnan(after) else after
            outcome.skipped = str(saved[f"e{j}/skipped"]) or None
        return float(saved[f"e{j}/meta"][1]), final
