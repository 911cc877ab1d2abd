"""The gate: rules on a report (and a baseline), a verdict, and an exit code CI can act on."""

from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.plan import GatePlan, GateSpec
from robustbench_cli.gate.rules import Rule, check_rules_against_threats, collect_rules, parse_rule

__all__ = ["GatePlan", "GateSpec", "Rule", "check_rules_against_threats", "collect_rules", "judge", "parse_rule"]
