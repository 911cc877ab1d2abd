"""Checks that an evaluation was run properly. A robust accuracy is only an upper bound worth reading if every
attack did its job; these checks say when one visibly did not.

- ``noise-vs-attack``: the noise yardstick ran on every clean-correct sample. If it broke more of the samples an
  attack attempted than the attack itself did, that attack is not working (gradient masking, a wrong loss or
  goal, too small a budget) and its "robust" samples prove nothing.
"""

from __future__ import annotations

from robustbench_cli.results import ThreatResult


def check(r: ThreatResult) -> list[dict]:
    out = []
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
    return out
