"""Sharded scans: a scan split into N shards and merged gives the per-sample results, and every aggregate, curve and
finding, of the same scan run whole, for any N; the decisions across the whole set (certificates, closest restarts,
undecided restarts) are taken once, over the merged state; bad shard specs and bad merges are one line, exit 2."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from robustbench_cli import api, distributed, zoo
from robustbench_cli.config import ScanConfig
from robustbench_cli.core.data import DataSpec
from robustbench_cli.core.errors import UserError
from robustbench_cli.evaluation.config import RunSpec
from robustbench_cli.evaluation.shards import Shard
from robustbench_cli.reports.model import load_report, timeless
from robustbench_cli.reports.shards import merge
from robustbench_cli.reports.writers import OutputSpec
from robustbench_cli.targets import TargetSpec

NET = '''from torch import nn


def Net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
'''
N_SAMPLES = 40


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> TargetSpec:
    """A small MLP trained on scikit-learn's digits for a few seconds: under linf 0.1 some samples break, some are
    certified and some stay undecided, so every decision of ``standard`` is taken."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("mlp")
    (folder / "net.py").write_text(NET)
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), folder / "net.pt")
    return TargetSpec(f"{folder / 'net.py'}:Net", weights=str(folder / "net.pt"), fast_forward=False)


SCANS = {  # name -> RunSpec options
    "default": dict(threats=("linf:0.1",), preset="default"),
    "standard": dict(threats=("linf:0.04",), preset="standard"),  # certified, broken and undecided samples
    "blackbox": dict(threats=("linf:0.1",), preset="blackbox", queries=200),
    "targeted": dict(threats=("linf:0.15",), preset="default", targeted="random"),
}


def _config(spec: TargetSpec, out: Path, scan: str, **kw) -> ScanConfig:
    return ScanConfig(targets=(spec,), data=DataSpec("digits", n=N_SAMPLES),
                      run=RunSpec(batch_size=8, **SCANS[scan]), outputs=OutputSpec((str(out),)), **kw)


def _plain(report) -> list[dict]:
    """Every result as data, without what a clock measured."""
    return timeless(report.to_dict()["results"])


@pytest.fixture(scope="module")
def whole(mlp, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("whole")
    return {scan: api.run(_config(mlp, folder / f"{scan}.json", scan), state=False).report for scan in SCANS}


@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("scan", list(SCANS))
def test_merged_shards_equal_the_scan_run_whole(mlp, whole, tmp_path, scan, count):
    outcome = distributed.run_workers(_config(mlp, tmp_path / "r.json", scan, workers=1, shards=count),
                                      executor=distributed.run_in_process)
    merged = outcome.report
    assert merged.provenance["merged"]["shards"] == count
    assert _plain(merged) == _plain(whole[scan]), list(_diff(_plain(merged), _plain(whole[scan])))[:8]
    assert merged.data == whole[scan].data
    if scan == "standard":  # the decisions across the whole set were all taken, and something to decide on
        r = merged.results[0]
        assert r.certificate and r.certificate["method"] and r.certificate["certified"] > 0
        assert r.attack("apgd-ce-closest").attempted > 0
        assert 0 < r.robust_accuracy < r.clean_accuracy
    outcome.state.remove()
    assert not (tmp_path / "r.json.shards").exists()


def test_shards_run_alone_and_merged_on_the_command_line_equal_the_whole_scan(mlp, whole, tmp_path, run_cli):
    args = [mlp.model, "--weights", mlp.weights, "--no-fast-forward", "--data", "digits", "--n", str(N_SAMPLES),
            "--eps", "0.1", "--batch-size", "8"]
    parts = []
    for i in (3, 1, 2):  # any order
        parts.append(tmp_path / f"s{i}.json")
        res = run_cli("scan", *args, "--shard", f"{i}/3", "-o", parts[-1])
        assert res.exit_code == 0, res.output
        shard = json.loads(parts[-1].read_text())
        assert shard["shard"]["index"] == i and shard["shard"]["of"] == 3
        assert len(shard["results"][0]["samples"]["id"]) == len(range(i - 1, N_SAMPLES, 3))
    res = run_cli("merge", *parts, "-o", tmp_path / "all.json", "-o", tmp_path / "all.html")
    assert res.exit_code == 0, res.output
    assert _plain(load_report(tmp_path / "all.json")) == _plain(whole["default"])
    assert "<html" in (tmp_path / "all.html").read_text().lower()


@given(n=st.integers(0, 500), count=st.integers(1, 40))
def test_shards_split_every_sample_once_without_padding(n, count):
    positions = np.concatenate([Shard(i, count).positions(n) for i in range(1, count + 1)])
    assert sorted(positions.tolist()) == list(range(n))
    sizes = [len(Shard(i, count).positions(n)) for i in range(1, count + 1)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["3/2", "0/0", "a/b", "1", "1/0", "-1/2", "2/2/2", ""])
def test_a_bad_shard_spec_is_one_clear_error(text):
    with pytest.raises(UserError, match="--shard"):
        Shard.parse(text)


# --- bad merges: each is one line and exit 2 (docs/bad-inputs.md) ------------------------------------------------------
@pytest.fixture(scope="module")
def shard_files(mlp, tmp_path_factory) -> dict[str, Path]:
    """Shards 1/2 and 2/2 of one scan, 1/2 of another seed, a whole (unsharded) report, an incomplete shard."""
    folder = tmp_path_factory.mktemp("parts")
    out = {}
    for name, shard, seed in (("a1", "1/2", 0), ("a2", "2/2", 0), ("b1", "1/2", 1)):
        cfg = _config(mlp, folder / f"{name}.json", "default", shard=shard)
        cfg = ScanConfig.from_dict({**cfg.to_dict(), "run": {**cfg.to_dict()["run"], "seed": seed}})
        rep = api.run(cfg, state=False).report
        out[name] = folder / f"{name}.json"
        out[name].write_text(rep.to_json())
    whole = api.run(_config(mlp, folder / "whole.json", "default"), state=False).report
    out["whole"] = folder / "whole.json"
    out["whole"].write_text(whole.to_json())
    part = json.loads(out["a2"].read_text())
    part["complete"] = False
    part["incomplete"] = {"reason": "interrupted", "unfinished": [], "targets_not_started": []}
    out["cut"] = folder / "cut.json"
    out["cut"].write_text(json.dumps(part))
    return out


MERGE_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "merge-different-scans": (["a1", "b1"], ("different scans", "seed")),
    "merge-missing-shard": (["a1"], ("shard 2/2 missing",)),
    "merge-duplicated-shard": (["a1", "a1", "a2"], ("given twice",)),
    "merge-not-a-shard": (["a1", "whole"], ("not a shard's report", "--shard")),
    "merge-unfinished-shard": (["a1", "cut"], ("incomplete", "--resume")),
}


@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_a_bad_merge_is_one_line_and_exit_2(case, shard_files, tmp_path, run_cli):
    names, words = MERGE_CASES[case]
    out = tmp_path / "merged.json"
    out.write_text("kept")
    res = run_cli("merge", *[shard_files[n] for n in names], "-o", out)
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in res.output
    for w in words:
        assert w in line, (w, line)
    assert out.read_text() == "kept"  # never a lost or replaced report


def test_merge_takes_the_shards_in_any_order(shard_files):
    a = merge([(str(shard_files[n]), load_report(shard_files[n])) for n in ("a1", "a2")])
    b = merge([(str(shard_files[n]), load_report(shard_files[n])) for n in ("a2", "a1")])
    assert _plain(a) == _plain(b)
    assert _plain(a) == _plain(load_report(shard_files["whole"]))


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {str(a)[:200]} != {str(b)[:200]}"


# --- bad scale-out options: one line and exit 2, before any work (docs/bad-inputs.md) ----------------------------------
ONNX = str(zoo.ONNX)
SCALE_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "shard-out-of-range": ([ONNX, "--shard", "3/2"], ("--shard must be I/N", "3/2")),
    "shard-zero": ([ONNX, "--shard", "0/0"], ("--shard must be I/N", "0/0")),
    "shard-not-numbers": ([ONNX, "--shard", "a/b"], ("--shard must be I/N", "'a/b'")),
    "shard-and-workers": ([ONNX, "--shard", "1/2", "--workers", "2"], ("--shard", "--workers", "not both")),
    "shard-battery-decides-across-the-set": ([zoo.SPEC, "--weights", str(zoo.WEIGHTS), "--preset", "standard",
                                              "--shard", "1/2"], ("decides across the whole set", "--workers")),
    "shard-batch-dependent-attack": ([ONNX, "--access", "labels", "--preset", "blackbox", "--shard", "1/2"],
                                     ("hopskipjump", "a shard cannot reproduce them")),
    "workers-zero": ([ONNX, "--workers", "0"], ("--workers must be in 1..",)),
    "shards-without-workers": ([ONNX, "--shards", "8"], ("--shards", "--workers")),
    "ray-address-without-workers": ([ONNX, "--ray-address", "127.0.0.1:9"], ("--ray-address needs --workers",)),
    "ray-address-not-answering": ([ONNX, "--workers", "1", "--ray-address", "127.0.0.1:9"],
                                  ("--ray-address 127.0.0.1:9", "nothing answers")),
    "ray-not-installed": ([ONNX, "--workers", "2"], ("--workers needs Ray", "robust-scan[ray]")),
}


@pytest.mark.parametrize("case", list(SCALE_CASES))
def test_a_bad_scale_out_option_is_one_line_and_exit_2(case, tmp_path, run_cli, monkeypatch):
    if case == "ray-not-installed":
        monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is not installed
    args, words = SCALE_CASES[case]
    t0 = time.monotonic()
    res = run_cli("scan", *args, "--data", "mnist", "--n", "10", "--eps", "0.1", "-o", tmp_path / "r.json")
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in res.output, res.output
    for w in words:
        assert w in line, (w, line)
    assert time.monotonic() - t0 < 60  # an address that does not answer is refused within a timeout
    assert not (tmp_path / "r.json").exists()


def test_a_resumed_scan_restores_each_finished_attack_as_it_ended(mlp, whole, tmp_path):
    """Resuming (which every shard does between rounds) restores a finished attack's robust accuracy after it and
    a skip as they were, instead of computing them again from later results."""
    cfg = _config(mlp, tmp_path / "r.json", "standard")
    first = api.run(cfg)
    assert cfg.state_path.is_file()
    again = api.run(ScanConfig.from_dict({**cfg.to_dict(), "resume": True}))
    assert _plain(again.report) == _plain(first.report) == _plain(whole["standard"])
    after = [a.robust_accuracy_after for a in again.report.results[0].attacks]
    assert len(set(x for x in after if x is not None)) > 1  # the cascade's steps, not the final accuracy repeated
