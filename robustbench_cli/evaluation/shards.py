"""Shards: one scan split into parts that give, merged, the per-sample results of the scan run whole.

A shard ``I/N`` is the samples of the selected set at positions ``I-1, I-1+N, I-1+2N, ...`` (round robin, so every
shard gets a like mix of easy and hard samples): no padding, no duplicates, and the sample ids stay those of the
whole set. Per-sample results can be split this way because every random draw of an attack is keyed by sample id and
results do not depend on the batch.

A few steps of a battery look across the whole set, and a shard cannot take them alone:

* the certificates' ``auto`` rule (stop when fewer than a quarter of the samples tried so far are proved), which
  walks the survivors of the first attack in set order;
* an ``undecided`` entry, which runs only when the undecided samples times its restarts do not outnumber the
  certified ones;
* a ``closest`` entry, which takes the top share of undecided samples by verified margin.

Each is a *decision*. A shard that reaches one it has not been given saves its state and stops at a :class:`Barrier`;
the driver (``robust scan --workers``) reads every shard's state, takes the decision over the whole set with the
same code an unsharded scan runs (:func:`decide`), and resumes the shards with it. So the decisions are made once,
on the merged state, and the merged report equals the unsharded one for any number of shards. A battery without such
steps (``quick``, ``default``, ``blackbox``, named attacks) never stops at a barrier, so ``--shard I/N`` runs it
alone, anywhere (a Slurm array task), and ``robust merge`` joins the reports.

The steps that look at *some* rows only (the sanity probes, the output-kind check, the certifier's self-check, a
surrogate's output kind) use the first rows of the whole set in every shard (:data:`HEAD_ROWS`, the ``head``), so
they see the same rows whatever the split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.io import atomic_write_all

HEAD_ROWS = 512  # rows of the whole set every shard sees for the probes and checks that look at a few rows


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``of``."""

    index: int
    of: int

    def __post_init__(self) -> None:
        if not (isinstance(self.of, int) and isinstance(self.index, int)) or self.of < 1 or not 1 <= self.index <= self.of:
            raise UserError(f"--shard must be I/N with 1 <= I <= N, got {self.index}/{self.of}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", str(text))
        if not m:
            raise UserError(f"--shard must be I/N (shard I of N, counted from 1), e.g. 2/8; got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def name(self) -> str:
        return f"{self.index}/{self.of}"

    def positions(self, n: int) -> np.ndarray:
        """Positions (0-based, in the selected set of ``n`` samples) of this shard's samples."""
        return np.arange(self.index - 1, n, self.of, dtype=np.int64)

    def take(self, data: EvalSet) -> EvalSet:
        """This shard's samples of ``data`` (the whole selected set), ids kept."""
        pos = self.positions(len(data))
        return EvalSet(x=data.x[pos], y=data.y[pos], ids=data.ids[pos], name=data.name, source=dict(data.source))


def head(data: EvalSet) -> EvalSet:
    """The first rows of the whole set: what the probes and checks that look at a few rows see in every shard."""
    k = min(len(data), HEAD_ROWS)
    return EvalSet(x=data.x[:k], y=data.y[:k], ids=data.ids[:k], name=data.name, source=dict(data.source))


class Barrier(Exception):
    """A shard reached a decision over the whole set that it has not been given. Its state is saved; the driver takes
    the decision (:func:`decide`) and resumes it."""

    def __init__(self, unit: str, point: str, label: str = "", value: float = 0.0):
        super().__init__(f"{unit}: {point} {label}".strip())
        self.unit, self.point, self.label, self.value = unit, point, label, value

    @property
    def key(self) -> str:
        return decision_key(self.unit, self.point, self.label)

    def to_dict(self) -> dict:
        return {"unit": self.unit, "point": self.point, "label": self.label, "value": self.value}

    @classmethod
    def from_dict(cls, d: dict) -> Barrier:
        return cls(d["unit"], d["point"], d.get("label", ""), float(d.get("value", 0.0)))


def decision_key(unit: str, point: str, label: str = "") -> str:
    return f"{unit}#{point}#{label}"


@dataclass
class ShardSync:
    """What a shard needs besides its samples: which shard it is, the head and the size of the whole set, and the
    decisions the driver took so far (key -> decision, JSON-able)."""

    shard: Shard
    head: EvalSet
    total: int  # samples in the whole set (the fast-route plan counts them, cascade.py)
    decisions: dict[str, Any] = field(default_factory=dict)

    def get(self, unit: str, point: str, label: str = "") -> Any:
        return self.decisions.get(decision_key(unit, point, label))

    # --- applying a decision to this shard's rows -----------------------------------------------------------------
    def own(self, ids: np.ndarray, chosen: list[int]) -> np.ndarray:
        """Bool per row of this shard: its id is among ``chosen``."""
        return np.isin(ids, np.asarray(chosen, dtype=np.int64))

    def certificate(self, d: dict, ids: np.ndarray) -> dict:
        """This shard's part of the certificate the driver ran: its own rows' counts; the time and the counts that
        are not per sample are carried by shard 1 only, so that merged sums equal the whole."""
        first = self.shard.index == 1
        cert = {"method": d["method"], "attempted": int(self.own(ids, d["attempted_ids"]).sum()),
                "certified": int(self.own(ids, d["certified_ids"]).sum()),
                "seconds": d["seconds"] if first else 0.0, "stopped": d["stopped"]}
        if d.get("crown_skipped"):
            cert["crown_skipped"] = d["crown_skipped"] if first else 0
        return cert


def save_decisions(path: Path, decisions: dict[str, Any]) -> None:
    atomic_write_all([(Path(path), json.dumps(decisions, sort_keys=True))])


def load_decisions(path: Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        out = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"the shards' decisions file {p} cannot be read ({e}); delete it to start over") from None
    if not isinstance(out, dict):
        raise UserError(f"the shards' decisions file {p} is not a JSON object; delete it to start over")
    return out


# --- the whole set's arrays of one (target, threat), gathered from every shard's state ---------------------------------
def gather(parts: list[tuple[Shard, dict[str, np.ndarray]]], n: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each array of ``names`` over the whole set of ``n`` samples, put together from the shards' own arrays."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        for shard, arrays in parts:
            a = arrays[name]
            if name not in out:
                out[name] = np.zeros((n, *a.shape[1:]), dtype=a.dtype)
            out[name][shard.positions(n)] = a
    return out


@dataclass
class WholeView:
    """The fields of a ThreatResult that the decisions read, over the whole set (the cascade's own decision
    functions take it in place of a result)."""

    robust: np.ndarray
    certified: np.ndarray
    best_margin: np.ndarray
    certificate: dict | None
