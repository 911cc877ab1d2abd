"""One scan value: a ScanConfig survives JSON and TOML unchanged, refuses what it does not know, and takes its
defaults from [tool.robust.scan] where the command line gives none (the command line wins)."""

from __future__ import annotations

import json

import pytest

from robustbench_cli import zoo
from robustbench_cli.config import ScanConfig, pyproject_defaults
from robustbench_cli.core.data import DataSpec
from robustbench_cli.core.errors import UserError
from robustbench_cli.evaluation.config import RunSpec
from robustbench_cli.targets import TargetSpec


def _config() -> ScanConfig:
    return ScanConfig(targets=(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), mean=(0.1,), std=(0.3,)),
                               TargetSpec(str(zoo.ONNX), access="labels")),
                      data=DataSpec("mnist:test", n=20, shuffle=True, resize=(32, 32)),
                      run=RunSpec(threats=("linf:0.1", "l2:1.5"), preset="quick", seed=3, queries=500))


def test_json_and_toml_round_trips_are_exact():
    cfg = _config()
    assert ScanConfig.from_json(cfg.to_json()) == cfg
    assert ScanConfig.from_toml(cfg.to_toml()) == cfg
    assert json.loads(cfg.to_json())["run"]["threats"] == ["linf:0.1", "l2:1.5"]


def test_what_a_config_does_not_know_is_one_line():
    data = json.loads(_config().to_json())
    data["run"]["epsilon"] = 0.3
    with pytest.raises(UserError, match="epsilon"):
        ScanConfig.from_dict(data)
    with pytest.raises(UserError, match="config: not valid TOML"):
        ScanConfig.from_toml("[run\nthreats = 1")
    with pytest.raises(UserError, match="config: not valid JSON"):
        ScanConfig.from_json("{")


def test_pyproject_defaults_fill_what_the_command_line_leaves(tmp_path, run_cli, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.robust.scan]\nthreat = ["linf:0.2"]\nattacks = ["fgsm"]\nn = 12\n')
    monkeypatch.chdir(tmp_path)
    assert pyproject_defaults() == {"threat": ["linf:0.2"], "attacks": ["fgsm"], "n": 12}
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "-o", tmp_path / "a.json")
    assert res.exit_code == 0, res.stderr
    rep = json.loads((tmp_path / "a.json").read_text())
    assert [r["threat"] for r in rep["results"]] == ["linf:0.2"] and rep["data"]["n"] == 12
    assert [a["attack"] for a in rep["results"][0]["attacks"]] == ["fgsm"]
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "--eps", "0.1", "--n", "8", "-o", tmp_path / "b.json")
    rep = json.loads((tmp_path / "b.json").read_text())  # the command line wins
    assert [r["threat"] for r in rep["results"]] == ["linf:0.1"] and rep["data"]["n"] == 8
    (tmp_path / "pyproject.toml").write_text('[tool.robust.scan]\nepsilon = 0.3\n')
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "--eps", "0.1", "-o", tmp_path / "c.json")
    assert res.exit_code == 2 and "unknown key 'epsilon' in [tool.robust.scan]" in res.stderr
