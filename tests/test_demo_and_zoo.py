"""The embedded default: the shipped model is what the training code makes, and the demo runs end to end."""

import json

import torch

from robustbench_cli import zoo
from robustbench_cli.core.data import load_eval_set


def test_training_is_deterministic():
    a = zoo.train(epochs=1, limit=640)
    b = zoo.train(epochs=1, limit=640)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_shipped_model_is_accurate_on_held_out_digits():
    data = load_eval_set("mnist:test")
    pred = zoo.load()(torch.as_tensor(data.x)).argmax(1).numpy()
    assert (pred == data.y).mean() > 0.95


def test_demo_writes_reports_and_shows_both_targets(run_cli, tmp_path):
    result = run_cli("demo", "--n", "24", "--report-dir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    for ext in ("json", "csv", "md"):
        assert (tmp_path / "out" / f"report.{ext}").is_file()
    assert "reports:" in result.stdout and str(tmp_path / "out" / "report.json") in result.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["format"] == "robust-report/1"
    kinds = {t["kind"] for t in rep["targets"]}
    assert kinds == {"torch", "onnx"}
    assert {t["output_kind"] for t in rep["targets"]} == {"logits"}
    for r in rep["results"]:
        assert r["n"] == 24 and 0.0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1.0
        assert len(r["samples"]["robust"]) == 24
    white, black = rep["results"]
    assert white["robust_accuracy"] < white["clean_accuracy"]  # PGD breaks an undefended CNN at eps 0.2
    assert any(a["skipped"] for a in black["attacks"])  # gradient attacks skipped on the black box, with a reason
    assert rep["provenance"]["libraries"]["onnxruntime"]
    assert rep["data"]["sha256"] and rep["targets"][1]["sha256"]


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zoo_files_are_what_their_cards_say():
    """Each shipped zoo checkpoint is the file its card describes, made by the `robust train` arguments in
    zoo.TRAIN_ARGS on mnist:train (never on mnist:test, which the demo scans)."""
    train_sha = load_eval_set("mnist:train").describe()["sha256"]
    for name, path in zoo.ZOO_FILES.items():
        card = json.loads((path.parent / (path.name + ".card.json")).read_text())
        assert card["format"] == "robust-train-card/1"
        assert card["checkpoint"]["sha256"] == _sha256(path)
        assert card["data"]["train"]["name"] == "mnist:train" and card["data"]["train"]["sha256"] == train_sha
        cmd = card["command"]
        assert cmd[0] == "train" and cmd[-2] == "-o"
        want = [a if not a.endswith(".pt") else "WEIGHTS.pt" for a in zoo.TRAIN_ARGS[name]]
        got = [a if not a.endswith(".pt") else "WEIGHTS.pt" for a in cmd[1:-2]]
        assert got == want
        assert card["threads"] == 1  # deterministic on one thread: python -m robustbench_cli.zoo --defences
    assert json.loads((zoo.DETECTOR.parent / (zoo.DETECTOR.name + ".card.json")).read_text())["classifier"]


def test_demo_defences_compares_the_zoo_and_the_detector(run_cli, tmp_path):
    result = run_cli("demo", "--defences", "--n", "40", "--report-dir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    for name in ("defences", "detector"):
        for ext in ("json", "csv", "md"):
            assert (tmp_path / "out" / f"{name}.{ext}").is_file()
    assert "McNemar" in result.stdout  # the side-by-side comparison of the three checkpoints
    rep = json.loads((tmp_path / "out" / "defences.json").read_text())
    by_weights = {t["weights"].rsplit("/", 1)[-1]: r for t, r in zip(rep["targets"], rep["results"])}
    assert set(by_weights) == {p.name for p in zoo.DEFENCES.values()}
    std = by_weights["mnist_cnn.pt"]
    assert all(r["threat"] == "linf:0.3" and r["n"] == 40 for r in rep["results"])
    assert std["robust_accuracy"] <= 0.05
    for name in ("mnist_cnn_pgd.pt", "mnist_cnn_alp.pt"):
        assert by_weights[name]["robust_accuracy"] >= 0.5  # the defences hold on held-out digits
    det = json.loads((tmp_path / "out" / "detector.json").read_text())
    plain, non_adaptive, adaptive = det["results"]
    assert non_adaptive["detector"]["adaptive"] is False and adaptive["detector"]["adaptive"] is True
    assert non_adaptive["detector"]["detection_rate"] > 0.5
    assert adaptive["robust_accuracy"] < non_adaptive["robust_accuracy"]  # the adaptive attacker gets through
