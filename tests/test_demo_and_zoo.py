"""The embedded default: the shipped model is what the training code makes, and the demo runs end to end."""

import json

import torch

from robustbench_cli import zoo
from robustbench_cli.data import load_eval_set


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
