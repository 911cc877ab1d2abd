"""Where `standard`'s passes pay: which APGD-T target ranks and which Square queries break images (issue 24).

For each setting of the AutoAttack benchmark (same models, images, epsilons as ``bench_autoattack.py``), one
evaluation runs APGD-CE as the cascade, then, each on every clean-correct image independently (no early stop
between them):

* APGD-T against one target class only, for each rank 1-9 of the wrong classes by clean logit (AutoAttack's order);
* Square, 5,000 queries, p_init 0.8 (its queries per image are the query of its break, or 5,000).

It also ranks each image's wrong classes by the linearised distance to their decision boundary under Linf,
``(z_y - z_t) / ||grad_x (z_y - z_t)||_1`` at the clean image (the target choice of MALT, Melamed et al. 2023), and
records every image's verified best margin after APGD-CE. The JSON keeps everything per image; the table printed
answers: of the images APGD-CE leaves, how many does each rank break, how many only ranks 4-9 break, and where the
breaking class stands in the linearised order.

    python benchmarks/probe_standard.py --models lenet5-adv --eps 0.3 --threads 1 --out benchmarks/results/probe_lenet5adv_03.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_autoattack import EPS, FULL_N, MODELS, Net, build_target, load_images  # noqa: E402

from robustbench_cli.attacks.apgd import APGDT  # noqa: E402
from robustbench_cli.attacks.base import Goal, likeliest_wrong_classes, register  # noqa: E402
from robustbench_cli.attacks.square import Square  # noqa: E402

TRACE_AT = (0, 100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 4998)


@register
class APGDTRank(APGDT):
    """APGD-T against the ``rank``-th likeliest wrong class only (a probe, not part of any preset)."""

    name = "probe-apgd-t-rank"
    summary = "probe: APGD-T against one target rank"

    def __init__(self, *, rank: int = 1, steps: int = 100):
        super().__init__(targets=1, steps=steps)
        self.rank = rank

    def _passes(self, oracle, x0, goal, threat, rng):
        ranked = likeliest_wrong_classes(oracle, x0, goal)
        return [Goal(ranked[:, self.rank - 1], True)]


@register
class SquareTrace(Square):
    """Square that records every sample's best margin loss at the iterations ``TRACE_AT`` (a probe)."""

    name = "probe-square-trace"
    summary = "probe: Square with its loss recorded"
    trace: dict = {}

    def _search(self, oracle, x0, x_best, best, found, in_round, goal, loss_fn, pool, p_init, n_iters, *rest):
        marks = [t for t in TRACE_AT if t < n_iters]
        # the schedule of p depends on the iteration and the total: run once, recording through a wrapped pool
        super()._search(oracle, x0, x_best, best, found, in_round, goal, loss_fn, _Tap(pool, best, found, marks),
                        p_init, n_iters, *rest)
        SquareTrace.trace = {"at": marks, "best": _Tap.last.rows, "found_at": _Tap.last.found_at.tolist()}


class _Tap:
    """Wraps Square's random pool: each ``take(it, ...)`` is the start of iteration ``it``; record ``best`` there."""

    last: _Tap

    def __init__(self, pool, best, found, marks):
        self.pool, self.best, self.found, self.marks = pool, best, found, set(marks)
        self.rows: dict[int, list] = {}
        self.found_at = torch.full((len(best),), -1, dtype=torch.long)
        _Tap.last = self

    def take(self, it, act):
        newly = self.found.cpu() & (self.found_at < 0)
        self.found_at[newly] = it
        if it in self.marks:
            self.rows[it] = self.best.cpu().tolist()
        return self.pool.take(it, act)


def linearised_order(net, x: torch.Tensor, y: torch.Tensor, classes: int, bs: int) -> np.ndarray:
    """(n, classes - 1): wrong classes ordered by (z_y - z_t) / ||grad (z_y - z_t)||_1, nearest first."""
    out = []
    for i in range(0, len(x), bs):
        xb = x[i: i + bs].clone().requires_grad_(True)
        yb = y[i: i + bs]
        z = net(xb)
        zy = z.gather(1, yb[:, None]).squeeze(1)
        dist = torch.empty(len(xb), classes)
        for t in range(classes):
            d = zy - z[:, t]
            (g,) = torch.autograd.grad(d.sum(), xb, retain_graph=t < classes - 1)
            dist[:, t] = (d / g.reshape(len(xb), -1).abs().sum(1).clamp_min(1e-12)).detach()
        dist[torch.arange(len(xb)), yb] = float("inf")
        out.append(dist.argsort(dim=1)[:, : classes - 1])
    return torch.cat(out).numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="lenet5-adv")
    p.add_argument("--eps", default=None)
    p.add_argument("--n", type=int, default=None, help="images (default: the benchmark's full size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-square", action="store_true")
    p.add_argument("--square-only", action="store_true",
                   help="only Square from the clean images, traced (use a batch size >= n to trace every image)")
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED))
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    C.set_threads(a.threads)
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import evaluate
    from robustbench_cli.evaluation.presets import Battery, Entry

    shared = Path(a.shared)
    entries = [Entry("apgd-ce", "apgd-ce", {"steps": 100})]
    entries += [Entry(f"t{r}", "probe-apgd-t-rank", {"rank": r}, independent=True) for r in range(1, 10)]
    if a.square_only:
        entries = [Entry("square", "probe-square-trace", {"max_queries": 5000, "p_init": 0.8})]
    elif not a.no_square:
        entries.append(Entry("square", "probe-square-trace", {"max_queries": 5000, "p_init": 0.8}, independent=True))
    battery = Battery("probe", 1, entries)
    rows = []
    for name in a.models.split(","):
        m = MODELS[name]
        for eps_text in EPS[m.data]:
            if a.eps and eps_text not in a.eps.split(","):
                continue
            ev, _ = load_images(m.data, shared, a.n or FULL_N[m.data])
            target = build_target(name, shared, a.batch_size)
            threat = ThreatModel.parse(f"linf:{eps_text}")
            t0 = time.perf_counter()
            res = evaluate(target, ev, [threat], battery, seed=a.seed, batch_size=a.batch_size).results[0]
            secs = time.perf_counter() - t0
            if a.square_only:
                sq = res.attacks[0]
                rows.append({"model": name, "eps": eps_text, "n": len(ev.ids), "seconds": secs, "ids": ev.ids.tolist(),
                             "clean_ok": (res.clean_pred == res.labels).tolist(), "square_only": {
                                 "broken": sq.broken_mask.tolist(), "queries": sq.queries.tolist(),
                                 "trace_rows": np.flatnonzero(sq.attempted_mask).tolist(), "trace": SquareTrace.trace}})
                print(f"{name} {eps_text}: square alone {secs:.0f} s, broke {int(sq.broken_mask.sum())}", flush=True)
                continue
            net = Net(target).eval()
            x, y = torch.as_tensor(ev.x), torch.as_tensor(ev.y)
            with torch.no_grad():
                z = torch.cat([net(x[i: i + 256]) for i in range(0, len(x), 256)])
            logit_order = z.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :-1].numpy()
            lin = linearised_order(net, x, y, z.shape[1], a.batch_size)
            att = {o.label: o for o in res.attacks}
            clean = res.clean_pred == res.labels
            ce = att["apgd-ce"].broken_mask.astype(bool)
            ranks = np.stack([att[f"t{r}"].broken_mask.astype(bool) for r in range(1, 10)], 1)
            left = clean & ~ce
            only_late = left & ~ranks[:, :3].any(1) & ranks[:, 3:].any(1)
            # where the class each breaking rank pursued stands in the linearised order (1 = nearest)
            lin_pos = []
            for i in np.flatnonzero(left & ranks.any(1)):
                pos = [int(np.flatnonzero(lin[i] == logit_order[i, r])[0]) + 1 for r in np.flatnonzero(ranks[i])]
                lin_pos.append({"id": int(ev.ids[i]), "logit_ranks": (np.flatnonzero(ranks[i]) + 1).tolist(),
                                "linearised_ranks": pos})
            row = {
                "model": name, "eps": eps_text, "n": len(y), "seconds": secs, "clean": int(clean.sum()),
                "apgd_ce_left": int(left.sum()),
                "rank_breaks_on_left": ranks[left].sum(0).tolist(),
                "seconds_per_rank": [att[f"t{r}"].seconds for r in range(1, 10)],
                "broken_by_ranks_1_3": int((left & ranks[:, :3].any(1)).sum()),
                "broken_only_by_ranks_4_9": int(only_late.sum()),
                "only_late_ids": ev.ids[only_late].tolist(),
                "breaks": lin_pos,
                "best_margin_after_all": res.best_margin.tolist() if res.best_margin is not None else None,
                "ids": ev.ids.tolist(), "clean_ok": clean.tolist(), "apgd_ce": ce.tolist(),
                "ranks": ranks.astype(int).tolist(),
            }
            if "square" in att:
                sq = att["square"]
                sqb = sq.broken_mask.astype(bool)
                grad = left & ranks.any(1)
                row["square"] = {
                    "seconds": sq.seconds,
                    "breaks_on_left": int((left & sqb).sum()),
                    "breaks_no_gradient_attack_found": int((left & sqb & ~grad).sum()),
                    "queries_of_those": sq.queries[left & sqb & ~grad].tolist(),
                    "queries": sq.queries.tolist(), "broken": sqb.tolist(),
                    # the independent entry attacks the clean-correct samples, in order: map back to all samples
                    "trace_rows": np.flatnonzero(sq.attempted_mask).tolist(), "trace": SquareTrace.trace,
                }
            rows.append(row)
            print(f"{name} {eps_text}: {secs:.0f} s; APGD-CE leaves {left.sum()}; breaks per rank {row['rank_breaks_on_left']}; "
                  f"only ranks 4-9: {only_late.sum()} {row['only_late_ids']}; linearised ranks of breaks: "
                  f"{sorted({p for b in lin_pos for p in b['linearised_ranks']})}"
                  + (f"; square: {row['square']['breaks_on_left']} on left, {row['square']['breaks_no_gradient_attack_found']} "
                     f"beyond every rank, at queries {row['square']['queries_of_those']}" if "square" in row else ""),
                  flush=True)
    C.write_json(a.out, {"meta": {"versions": C.versions(), "git": C.git_state(), "argv": sys.argv,
                                  "load": C.loadavg(), "threads": a.threads}, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
