"""bench_autoattack.py and bench_defences.py run end to end (slow smoke runs), and the CIFAR-10 image selection."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, shared_path

BENCH = ROOT / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # the bench modules import _common by name
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


# --- the benchmark script -----------------------------------------------------------------------------------------
def test_cifar_images_lossless_first_then_balanced_jpeg_without_duplicates():
    shared_path("cifar10", "cifar10_test_jpeg_q75_classmajor.npz")
    bench = _load("bench_autoattack")
    ev, sources = bench.load_images("cifar10", Path(shared_path()), 130)
    assert sources == {"cifar10_test_first100_lossless.npz": 100, "cifar10_test_jpeg_q75_classmajor.npz": 30}
    assert ev.ids[:100].tolist() == list(range(100))
    assert sorted(ev.y[100:].tolist()) == sorted(list(range(10)) * 3)  # classes in turn
    assert len(set(ev.ids.tolist())) == 130
    # none of the JPEG images is a copy of a lossless one (JPEG changes a pixel by ~6/255 on average)
    d = (torch.as_tensor(ev.x[100:])[:, None] - torch.as_tensor(ev.x[:100])[None]).abs().flatten(2).mean(2)
    assert float(d.min()) > 20 / 255


@pytest.mark.slow
def test_bench_autoattack_smoke(tmp_path):
    pytest.importorskip("pyautoattack", reason="pyautoattack (in the test and bench extras) is the reference this smoke run compares with")
    shared_path("models_mnist", "convex_adversarial__mnist.pth")
    shared_path("mnist", "mnist_test.npz")
    bench = _load("bench_autoattack")
    out = tmp_path / "aa.json"
    rc = bench.main(["--models", "wk-mnist-0.1", "--eps", "0.1", "--n-mnist", "4", "--threads", "1",
                     "--shared", str(shared_path()), "--out", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["n"] == 4 and row["robust"]["preset"].startswith("standard@")
    assert row["certificates"]["crown"]["certified_accuracy"] > 0  # the certified net: CROWN certifies some
    assert row["robust"]["robust_accuracy"] >= row["certified_accuracy"]
    assert row["autoattack"]["robust_accuracy"] >= row["certified_accuracy"]
    assert row["autoattack"]["outside_ball"] == 0
    assert row["time_ratio_robust_over_autoattack"] > 0


@pytest.mark.slow
def test_bench_defences_smoke(tmp_path):
    """bench_defences.py end to end on 8 MNIST test images: the zoo's robust accuracies, the AutoAttack cross-check
    (no image left robust that AutoAttack breaks) and the detector's non-adaptive and adaptive rows."""
    pytest.importorskip("pyautoattack", reason="pyautoattack (in the test and bench extras) is the cross-check")
    shared_path("mnist", "mnist_test.npz")
    bench = _load("bench_defences")
    out = tmp_path / "def.json"
    rc = bench.main(["--n", "8", "--aa-n", "4", "--threads", "1", "--shared", str(shared_path()), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    rows = {r["checkpoint"]: r for r in res["zoo"]}
    assert set(rows) == {"standard", "pgd", "alp"}
    for r in rows.values():
        assert r["n"] == 8 and 0 <= r["robust_accuracy"] <= r["clean_accuracy"]
        aa = r["autoattack"]
        assert aa["n"] == 4 and aa["robust_only"] == 0 and aa["invalid_points"] == 0
    assert rows["pgd"]["robust_accuracy"] > rows["standard"]["robust_accuracy"]
    plain, non_adaptive, adaptive = res["detector"]["rows"]
    assert non_adaptive["adaptive"] is False and adaptive["adaptive"] is True
    assert adaptive["robust_accuracy"] <= non_adaptive["robust_accuracy"]


@pytest.mark.slow
def test_bench_readme_times_runs_the_readme_command_and_reads_what_it_scanned(tmp_path, capsys):
    """bench_readme_times.py on `robust demo` (the README's quick start): timed, with the machine and load, and the
    images the demo scanned read back from its report, which is what the README says it scans."""
    bench = _load("bench_readme_times")
    out = tmp_path / "times.json"
    assert bench.main(["--only", "robust demo", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["cores_usable"] >= 1 and res["machine"]["torch"]
    (run,) = res["runs"]
    assert run["command"] == "robust demo" and run["exit_code"] == 0 and run["seconds"] > 0
    assert run["load_before"] is None or len(run["load_before"]) == 3
    (scanned,) = run["scanned"]
    assert scanned["data"] == "mnist:test" and scanned["images"] == 200 and len(scanned["targets"]) == 2
    assert "| `robust demo` |" in capsys.readouterr().out
    from robustbench_cli.core.data import load_eval_set

    readme = (ROOT / "README.md").read_text()
    assert "on 200 of its 1,000 held-out digits" in readme  # what the README says the demo scans
    assert len(load_eval_set("mnist:test").y) == 1000


def test_probe_images_counts_verified_breaks_per_seed(tmp_path):
    """probe_images.py: one run per seed on the chosen rows of a benchmark setting, breaks counted per image and seed.
    On the standard LeNet5 at 0.3 (0% robust for AutoAttack and robust) APGD-CE breaks both rows from every start, with
    a positive verified margin; an unknown model is one line and exit code 2."""
    shared_path("models_mnist", "advertorch__mnist_lenet5_clntrained.pt")
    shared_path("mnist", "mnist_test.npz")
    probe = _load("probe_images")
    out = tmp_path / "p.json"
    aa = ["--autoattack", "apgd-ce"] if importlib.util.find_spec("pyautoattack") else []
    rc = probe.main(["--setting", "lenet5@0.3", "--ids", "0,1", "--seeds", "2", "--shared", str(shared_path()),
                     "--robust", 'apgd-ce {"steps": 20}', 'noise {"draws": 1}', *aa, "--out", str(out)])
    assert rc == 0
    got = json.loads(out.read_text())
    assert got["rows"] == [0, 1] and got["seeds"] == 2 and len(got["wrong_classes_by_logit"][0]) == 9
    runs = got["robust"]['apgd-ce {"steps": 20}']
    assert [r["broken"] for r in runs] == [[1, 1], [1, 1]] and all(m > 0 for r in runs for m in r["margin"])
    assert all(len(r["broken"]) == 2 for r in got["robust"]['noise {"draws": 1}'])
    if aa:
        assert [r["broken"] for r in got["autoattack"]["apgd-ce"]] == [[1, 1], [1, 1]]
    assert probe.main(["--setting", "nonet@0.3", "--ids", "0", "--out", str(out)]) == 2
