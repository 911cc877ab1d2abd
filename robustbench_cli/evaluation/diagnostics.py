"""Checks that an evaluation was run properly. A robust accuracy is only an upper bound worth reading if every
attack did its job; these checks say when one visibly did not. Each finding has an id (docs/diagnostics.md's
table explains it and says what to do); a failed one marks the evaluation as suspect. The list follows the
warning signs of Athalye, Carlini & Wagner 2018 ("Obfuscated Gradients Give a False Sense of Security") and
Carlini et al. 2019 ("On Evaluating Adversarial Robustness"), as AutoAttack's checks do.

Per threat model:
- ``noise-vs-attack``: the noise yardstick ran on every clean-correct sample. If it broke more of the samples an
  attack attempted than the attack itself did, that attack is not working.
- ``blackbox-vs-whitebox``: on a target with gradients, a query attack running after the gradient attacks in the
  cascade broke samples they could not (at least 2 samples and 1% of n): a sign of gradient masking.

Per target (from probes on clean inputs, and across the threat models of one scan):
- ``deterministic-outputs``: the same inputs asked twice give the same scores (the scan refuses a randomised
  model unless ``--eot`` is on).
- ``gradients``: gradients of the loss at clean inputs are finite and not zero (white-box targets).
- ``logit-outputs``: the model returns logits, not probabilities (softmax outputs flatten gradients).
- ``epsilon-monotone``: robust accuracy does not rise with epsilon for the same norm and goal.
- ``unbounded-epsilon``: an attack allowed the whole input box (Linf epsilon = the box's width) drives the
  clean-correct probe inputs to chance accuracy (1/classes) or below: PGD-10 from the clean input (no random start,
  which could hide a zero gradient) on white boxes, Square with 100 queries on score-only ones, 10 noise draws on
  label-only ones. It fails when the accuracy left is above what chance would explain (one-sided binomial test
  against 1/classes at level 0.01: on 64 inputs and 10 classes, more than 13 still correct).

The probes' model calls are recorded under ``targets[].probes`` (``model_rows``), outside every attack's count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustbench_cli.attacks import Goal, create
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.results import Evaluation, ThreatResult
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.targets.base import Capability, Oracle

PROBE_ROWS = 64  # clean inputs used by the probes: enough to see a pattern, cheap next to any attack
REPEAT_TOL = 1e-4  # scores of identical calls may differ by this much, relative to the largest score (at least 1)
UNBOUNDED = {"pgd": {"steps": 10, "random_start": False}, "square": {"max_queries": 100}, "swap": {},
             "noise": {"draws": 10}}
UNBOUNDED_LEVEL = 0.01  # the binomial test's level: a model exactly at chance fails 1% of the time; a sound model,
# whose unbounded attack leaves next to nothing, practically never
BLACKBOX_MIN_BROKEN = 2  # a query attack's breaks after the gradient attacks that count as a finding: this many,
BLACKBOX_MIN_SHARE = 0.01  # and this share of n. Sound models leave a few points near the boundary to a long random
# search (AutoAttack's Square adds well under 1% after APGD on models without masking); one lucky sample is no pattern


class _WholeBox(ThreatModel):
    """Linf over the whole input box. Users cannot ask for it (``ThreatModel`` refuses Linf >= 1); the probe can."""

    def __post_init__(self) -> None:
        pass


def randomised(probes: dict) -> bool:
    """Whether identical inputs gave different scores in the probe."""
    if not probes:
        return False
    return probes["repeat_max_abs_diff"] > REPEAT_TOL * max(1.0, probes.get("scores_max_abs", 1.0))


def probe(target, x: torch.Tensor, clean_scores: torch.Tensor, labels) -> dict:
    """Ask the target a few questions on clean inputs: the same answers twice? usable gradients? can an attack
    with no epsilon limit break them?"""

    k = min(len(x), PROBE_ROWS)
    if not k:
        return {}
    # the same batch twice: the clean pass chunks differently, and a different batch shape may pick a different
    # kernel (summation order) on some devices, which is not randomness
    first = target.scores(x[:k])
    again = target.scores(x[:k])
    diff = float((again.float() - first.float()).abs().max())
    # the same inputs in another composition (reversed, in batches of 3): a model whose outputs depend on the rest of
    # its batch (BatchNorm or dropout left in training mode) changes here and not above
    order = torch.arange(k - 1, -1, -1)
    try:
        mixed = torch.cat([target.scores(x[order[i:i + 3].to(x.device)]) for i in range(0, k, 3)])[order.argsort()]
        batch_diff: float | None = float((mixed.float() - first.float()).abs().max())
    except torch.OutOfMemoryError:  # small batches that do not fit say nothing about the model: no finding
        batch_diff = None
    finite = first[torch.isfinite(first)]
    out = {"rows": k, "model_rows": 3 * k + target.take_setup_rows(), "repeat_max_abs_diff": diff,
           "batch_max_abs_diff": batch_diff,
           "scores_max_abs": float(finite.abs().max()) if finite.numel() else 0.0, "output_kind": target.output_kind}
    if Capability.GRADIENTS in target.capabilities:
        xs = x[:k].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = target.as_logits(target.forward(xs))
            loss = F.cross_entropy(z, torch.as_tensor(labels[:k], device=z.device))
            (g,) = torch.autograd.grad(loss, xs)
        norms = g.flatten(1).norm(dim=1)
        out["model_rows"] += k  # one forward (and backward) pass more
        out["grad_nonfinite"] = int((~torch.isfinite(norms)).sum())
        out["grad_zero"] = int((norms == 0).sum())
    pred = clean_scores[:k].argmax(dim=1).cpu()
    correct = (pred == torch.as_tensor(labels[:k])).nonzero().squeeze(1)
    out["unbounded"] = _unbounded(target, x[:k], torch.as_tensor(labels[:k]), correct, pred)
    out["model_rows"] += out["unbounded"]["model_rows"]
    return out


def _unbounded(target, x: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, pred: torch.Tensor) -> dict:
    """Attack the clean-correct probe rows with epsilon = the whole box; verify as the harness does.

    The attack fits the access level: PGD with gradients, Square with scores, and with labels only a swap: another
    probe input that the model puts in another class is inside the whole box, so a healthy model is broken by it
    (random noise, the older label-only probe, left healthy models "robust" and cried wolf)."""

    caps = target.capabilities
    name = "pgd" if Capability.GRADIENTS in caps else "square" if Capability.SCORES in caps else "swap"
    if name == "swap" and len(set(pred.tolist())) < 2:
        name = "noise"  # one class for every probe input: nothing to swap in
    lo, hi = target.bounds
    threat = _WholeBox(Norm.LINF, float(hi - lo), "box")
    m = len(rows)
    info = {"attack": name, **UNBOUNDED[name], "epsilon": float(hi - lo), "rows": m, "still_correct": 0,
            "model_rows": 0}
    if not m:
        return info
    dev = x.device
    x0 = x[rows.to(dev)]
    goal = Goal(labels[rows].to(dev), False)
    oracle = Oracle(target, m)
    if name == "swap":  # for each row, the first probe input the model puts in another class: no query to choose it
        other = torch.stack([torch.nonzero(pred != int(y))[0, 0] for y in goal.labels.cpu()])
        cand = x[other.to(dev)]
    else:
        cand = create(name, **UNBOUNDED[name]).run(oracle, x0, goal, threat,
                                                   SampleRng(0, "probe/unbounded", rows.tolist(), dev))
    cand = cand.detach()
    cand = threat.project(torch.where(torch.isfinite(cand), cand, x0).to(x0.dtype), x0, target.bounds)
    pred = oracle.predict(cand, exact=True).to(dev)  # the model itself decides, as in the harness
    info["still_correct"] = int((pred == goal.labels).sum())
    info["model_rows"] = int(oracle.used.sum())
    return info


def binomial_tail(c: int, m: int, p: float) -> float:
    """P(X >= c) for X ~ Binomial(m, p), summed in log space: the terms' binomial coefficients overflow a float
    from a few hundred samples on (math.comb(2000, 1000) has 600 digits)."""
    if c <= 0:
        return 1.0
    if c > m or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) + i * lp + (m - i) * lq
            for i in range(c, m + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs)))


def _eot_draws(e: Evaluation) -> int:
    """The largest ``eot`` of the attacks that ran (1 without ``--eot``)."""
    return max([int(a.config.get("eot", 1)) for r in e.results for a in r.attacks if not a.skipped] or [1])


def _finite(r: ThreatResult) -> list[dict]:
    """``finite-scores``: candidates the model answered with NaN or inf are never breaks, and are counted."""
    if r.nonfinite is None:
        return []
    bad = int(r.nonfinite[r.eligible].sum())
    samples = int((r.nonfinite[r.eligible] > 0).sum())
    return [{"check": "finite-scores", "passed": bad == 0, "message": (
        "every candidate the harness verified got finite scores" if bad == 0 else
        f"the model returned NaN or infinite scores for {bad} candidate(s) on {samples} sample(s); none of them "
        "counts as a break, but a model that fails numerically near its inputs can hide breaks there (and a "
        "deployed one would misbehave): check its numerics (overflow in exp, division by a norm) before trusting "
        "this robust accuracy")}]


def check(r: ThreatResult) -> list[dict]:
    out = _finite(r)
    yardsticks = [a for a in r.attacks if a.family == "baseline" and a.broken_mask is not None]
    for noise in yardsticks:
        for a in r.attacks:
            if a is noise or a.skipped or a.attempted_mask is None or not a.attempted:
                continue
            by_noise = int((noise.broken_mask & a.attempted_mask).sum())
            by_attack = int((a.broken_mask & a.attempted_mask).sum())
            passed = by_noise <= by_attack
            msg = (f"{a.label} broke {by_attack} of its {a.attempted} samples; {noise.label} broke {by_noise} of them"
                   + ("" if passed else f": {a.label} is weaker than random noise, so it is not working "
                      "(gradient masking, a wrong loss, or too small a budget)"))
            out.append({"check": "noise-vs-attack", "attack": a.label, "baseline": noise.label, "passed": passed,
                        "message": msg})
    if r.certified is not None and r.certificate and r.certificate.get("method"):
        # the attacks after the certificates skip certified samples; the noise yardstick still draws on them
        bad = int((r.certified & ~r.robust & r.eligible).sum())
        out.append({"check": "certificate-sound", "passed": bad == 0, "message": (
            f"{int(r.certified.sum())} samples certified ({r.certificate['method']}); none was broken by the attacks "
            "that still ran on them" if bad == 0 else
            f"{bad} certified samples were broken by a verified attack: the certificate is wrong for this model (a "
            "bug, please report it); rerun with --no-certify, whose numbers do not rely on it")})
    return out


def check_target(e: Evaluation) -> list[dict]:
    """Findings about the target itself, the same for each of its threat models."""
    out = []
    p = e.probes
    if p:
        diff = p["repeat_max_abs_diff"]
        ok = not randomised(p)
        eot = _eot_draws(e)
        if p.get("batch_max_abs_diff") is not None and ok:
            bdiff = p["batch_max_abs_diff"]
            bok = bdiff <= REPEAT_TOL * max(1.0, p.get("scores_max_abs", 1.0))
            out.append({"check": "batch-independent-outputs", "passed": bok, "message": (
                f"the same {p['rows']} clean inputs in batches of another size and order gave the same scores (max "
                f"difference {bdiff:.2g})" if bok else
                f"the same {p['rows']} clean inputs in batches of another size and order gave different scores (max "
                f"difference {bdiff:.2g}): the model's output depends on the rest of its batch (BatchNorm or dropout "
                "left in training mode?); call model.eval() before export or scan, or results change with "
                "--batch-size")})
        out.append({"check": "deterministic-outputs", "passed": ok, "message": (
            f"the same {p['rows']} clean inputs asked twice gave the same scores (max difference {diff:.2g})" if ok else
            f"the same {p['rows']} clean inputs asked twice gave different scores (max difference {diff:.2g}): a "
            "randomised model or preprocessing; single-draw attacks are unreliable, average gradients over draws (EOT) "
            + (f"as this scan did (--eot {eot}); if the numbers move between seeds, raise it" if eot > 1 else
               "with --eot N (e.g. --eot 20)"))})
        if p.get("output_kind") == "probabilities":
            out.append({"check": "logit-outputs", "passed": False, "message": (
                "the model returns probabilities: attacks use their logarithm, but a saturated softmax still hides "
                "gradient and margin information; export the logits if you can")})
        if "grad_zero" in p:
            bad = p["grad_zero"] + p["grad_nonfinite"]
            ok = bad == 0
            out.append({"check": "gradients", "passed": ok, "message": (
                f"the loss gradient is finite and non-zero at all {p['rows']} probed clean inputs" if ok else
                f"the loss gradient is zero at {p['grad_zero']} and NaN/inf at {p['grad_nonfinite']} of {p['rows']} "
                "probed clean inputs: gradient masking or non-differentiable preprocessing; pass the layers that "
                "block the gradient to --bpda (straight-through), or trust the black-box attacks (--preset blackbox)")})
        u = p.get("unbounded")
        k = e.target.get("num_classes")
        if u and u["rows"] and k:
            c, m = u["still_correct"], u["rows"]
            ok = binomial_tail(c, m, 1.0 / k) >= UNBOUNDED_LEVEL
            out.append({"check": "unbounded-epsilon", "passed": ok, "message": (
                f"with the whole input box allowed (linf {u['epsilon']:g}), {u['attack']} left {c} of {m} clean-correct "
                f"probe inputs correctly classified ({100 * c / m:.1f}%; chance is {100 / k:.1f}%)" + ("" if ok else
                ": an attack that cannot break the model even when any input is allowed is not working on it (masked "
                "or useless gradients, saturated scores); see the gradients check, try --bpda, --eot or "
                "--preset blackbox"))})
    groups: dict[tuple, list[ThreatResult]] = {}
    for r in e.results:
        groups.setdefault((r.threat.norm, r.threat.targeted), []).append(r)
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r.threat.epsilon)
        for small, big in zip(rs, rs[1:]):
            ok = big.robust_accuracy <= small.robust_accuracy
            out.append({"check": "epsilon-monotone", "passed": ok, "message": (
                f"robust accuracy {100 * small.robust_accuracy:.1f}% at {small.threat.name} and "
                f"{100 * big.robust_accuracy:.1f}% at {big.threat.name}" + ("" if ok else
                ": it rose with epsilon, so the attacks at the larger epsilon did not work (raise steps or restarts)"))})
    return out


CHANCE_LEVEL = 0.01  # clean accuracy is "at chance" when a binomial test cannot tell it from 1/classes at this level


def check_inputs(e: Evaluation) -> list[dict]:
    """Findings that say the scan may not be measuring the model the user meant: weights left at their random
    initialisation, a clean accuracy no better than chance, a selection that covers few of the classes."""
    out: list[dict] = []
    if e.target.get("random_weights"):
        out.append({"check": "random-weights", "passed": False, "message": (
            "the model was built twice and its weights differed: it runs on its random initialisation (no --weights, "
            "no --pretrained); its numbers describe no trained model. Give --weights FILE or --pretrained")})
    if not e.results:
        return out
    r = e.results[0]
    k = e.target.get("num_classes")
    n, c = int(r.eligible.sum()), int((r.clean_correct & r.eligible).sum())
    if k and n >= 10:
        at_chance = binomial_tail(c, n, 1.0 / k) >= CHANCE_LEVEL
        out.append({"check": "clean-accuracy", "passed": not at_chance, "message": (
            f"clean accuracy {100 * c / n:.1f}% on {n} samples, above chance ({100 / k:.1f}%)" if not at_chance else
            f"clean accuracy {100 * c / n:.1f}% on {n} samples is no better than chance ({100 / k:.1f}% for {k} "
            "classes): the robust accuracy below it means little. Likely causes: wrong normalisation (--mean/--std), "
            "wrong layout (--data-layout, --layout), wrong or missing weights, labels in another order")})
    present = len(set(r.labels[r.eligible].tolist()))
    expected = min(int(k or present), n)
    if n >= 10 and expected >= 4 and present <= expected // 2:
        out.append({"check": "class-coverage", "passed": False, "message": (
            f"the {n} selected samples cover {present} of {k} classes: the data is probably stored class by class "
            "and the selection took its first rows; pass --shuffle (seeded) for a sample of every class")})
    return out


def check_cascade(r: ThreatResult, target: dict) -> list[dict]:
    """``blackbox-vs-whitebox``: query attacks after the gradient attacks of a white-box cascade should find little."""
    if "gradients" not in (target.get("capabilities") or []):
        return []
    out, gradient = [], []
    for a in r.attacks:
        if a.skipped or a.independent or a.attempted_mask is None or a.broken_mask is None:
            continue
        if a.family == "gradient":
            gradient.append(a.label)
        elif a.family == "query" and gradient and a.attempted:
            # in the cascade, every sample a later attack attempted is one the gradient attacks left robust
            broken = int((a.broken_mask & a.attempted_mask).sum())
            limit = max(BLACKBOX_MIN_BROKEN, math.ceil(BLACKBOX_MIN_SHARE * r.n))
            ok = broken < limit
            out.append({"check": "blackbox-vs-whitebox", "attack": a.label, "passed": ok, "message": (
                f"{a.label} broke {broken} of the {a.attempted} samples the gradient attacks "
                f"({', '.join(gradient)}) left robust" + (f" (a finding from {limit})" if ok else
                ": a black-box attack beat the white-box ones, the mark of gradient masking; find the layers that "
                "block or randomise the gradient (--bpda for non-differentiable ones, --eot for random ones) and "
                "trust the black-box number meanwhile"))})
    return out


def run(e: Evaluation) -> None:
    """Every check of an evaluation, as findings on each of its results (the target's own findings on each)."""
    about_target = [*check_inputs(e), *check_target(e)]
    for r in e.results:
        r.findings = [*check(r), *check_cascade(r, e.target), *about_target]
