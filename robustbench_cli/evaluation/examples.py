"""Adversarial examples people can look at: 8-bit images, re-checked on the target after quantisation.

The harness verified each adversarial candidate in float32. An 8-bit PNG moves every pixel to the 1/255 grid,
which can undo a success that sat close to the decision boundary, and can push a pixel that sat on the epsilon
boundary just outside the ball. So every example shown or saved is quantised first (to the nearest grid value,
or, when that leaves the threat model, towards the clean input), then shown to the target again (a real model
call, counted by an :class:`~robustbench_cli.targets.base.Oracle`), and the result is recorded: the model's answer
on exactly the pixels in the file, the distance of those pixels, and whether they still fool the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustbench_cli.targets.base import Oracle


@dataclass
class Example:
    target: str
    threat: str
    index: int  # row of the evaluation
    id: int  # row in the data source
    label: int
    goal: int
    targeted: bool
    clean_pred: int
    attack: str  # the attack whose verified candidate broke the sample
    adv_pred: int  # the target's answer on the float32 candidate
    distance: float  # of the float32 candidate
    original: np.ndarray  # uint8, the sample's layout: (C, H, W) or (D,)
    adversarial: np.ndarray  # uint8, the quantised candidate: exactly the pixels of the image
    saved_pred: int = -1  # the target's answer on the quantised pixels
    saved_distance: float = float("nan")  # of the quantised pixels from the clean input
    inside: bool = False  # the quantised pixels lie inside the threat model
    fools: bool = False  # ... and the target's answer still meets the goal
    file: str | None = None
    original_file: str | None = None
    clean: np.ndarray | None = None  # float32 clean input (the perturbation is drawn against it)

    @property
    def still_adversarial(self) -> bool:
        return self.inside and self.fools


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def from_u8(q: np.ndarray) -> np.ndarray:
    """How an 8-bit image reads back as data (the loaders' own conversion)."""
    return q.astype(np.float32) / np.float32(255.0)


def quantise(adv: np.ndarray, x0: np.ndarray, threat, bounds=(0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images of the candidates, inside the threat model where possible, and whether each one is inside."""
    x0_t = torch.as_tensor(x0)
    q = to_u8(adv)
    inside = threat.contains(torch.as_tensor(from_u8(q)), x0_t, bounds).numpy()
    if not inside.all():  # round towards the clean input instead: never further from it than the candidate
        rows = ~inside
        a255 = adv[rows].astype(np.float64) * 255.0
        c255 = x0[rows].astype(np.float64) * 255.0
        grid = np.rint(c255)
        on_grid = np.abs(c255 - grid).reshape(len(c255), -1).max(axis=1) < 1e-3
        d = a255 - grid
        toward = np.where(on_grid.reshape(-1, *[1] * (a255.ndim - 1)), grid + np.trunc(d),
                          np.where(a255 >= c255, np.floor(a255), np.ceil(a255)))
        q[rows] = np.clip(toward, 0, 255).astype(np.uint8)
        inside = threat.contains(torch.as_tensor(from_u8(q)), x0_t, bounds).numpy()
    return q, inside


def check_examples(target, data, res, indices: np.ndarray) -> tuple[list[Example], int]:
    """Quantise the kept candidates of ``indices`` and ask ``target`` about them again; returns examples, queries."""
    if res.adversarial is None:
        raise RuntimeError("the evaluation kept no adversarial candidates (evaluate(..., keep_adversarials=True))")
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        return [], 0
    x0 = data.x[indices]
    adv = res.adversarial[indices]
    if not np.isfinite(adv).all():
        raise RuntimeError("asked for examples of samples that were not broken")
    q, inside = quantise(adv, x0, res.threat, target.bounds)
    xq = torch.as_tensor(from_u8(q)).to(target.device)
    oracle = Oracle(target, len(indices))
    pred = oracle.predict(xq, exact=True).cpu().numpy().astype(np.int64)  # the model itself
    queries = int(oracle.used.sum())
    targeted = bool(res.threat.targeted or (res.goal != res.labels).any())
    dist = res.threat.exact_distance(torch.as_tensor(from_u8(q)), torch.as_tensor(x0)).numpy()
    out = []
    for j, i in enumerate(indices):
        goal = int(res.goal[i])
        fools = bool(pred[j] == goal) if targeted else bool(pred[j] != goal)
        out.append(Example(
            target=res.target, threat=res.threat.name, index=int(i), id=int(res.ids[i]), label=int(res.labels[i]),
            goal=goal, targeted=targeted, clean_pred=int(res.clean_pred[i]), attack=str(res.broken_by[i]),
            adv_pred=int(res.adv_pred[i]), distance=float(res.distance[i]), original=to_u8(x0[j]), adversarial=q[j],
            saved_pred=int(pred[j]), saved_distance=float(dist[j]), inside=bool(inside[j]),
            fools=fools, clean=x0[j],
        ))
    return out, queries


def broken_indices(res) -> np.ndarray:
    return np.flatnonzero(~res.robust & res.clean_correct & (res.adv_pred >= 0))


def select(res, k: int) -> np.ndarray:
    """Up to ``k`` broken samples, taken in turn from each attack that broke some (battery order, data order)."""
    idx = broken_indices(res)
    if k <= 0 or not len(idx):
        return idx[:0]
    order = [a.label for a in res.attacks]
    queues = {lab: [i for i in idx if res.broken_by[i] == lab] for lab in order}
    queues = {lab: q for lab, q in queues.items() if q}
    picked: list[int] = []
    while len(picked) < k and any(queues.values()):
        for lab in list(queues):
            if queues[lab] and len(picked) < k:
                picked.append(queues[lab].pop(0))
    return np.array(sorted(picked), dtype=np.int64)


def summary(examples: list[Example], queries: int) -> dict:
    good = sum(e.still_adversarial for e in examples)
    return {"checked": len(examples), "still_adversarial": good, "not_adversarial": len(examples) - good,
            "outside_threat": sum(not e.inside for e in examples), "recheck_queries": queries}
