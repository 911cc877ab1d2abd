"""Bad inputs through the CLI: exit code 2, one clear line on stderr, never a traceback; reports stay intact."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_cli import zoo

ONNX = str(zoo.ONNX)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every bad (and one good) input, made once."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    f: dict[str, str] = {"dir": str(d)}

    (d / "folder_model").mkdir()
    f["folder_model"] = str(d / "folder_model")
    (d / "empty.onnx").write_bytes(b"")
    f["empty_onnx"] = str(d / "empty.onnx")
    (d / "garbage.onnx").write_bytes(bytes(rng.integers(0, 256, 512, dtype=np.uint8)))
    f["garbage_onnx"] = str(d / "garbage.onnx")

    sd = zoo.load().state_dict()
    torch.save(sd, d / "state_dict.pt")
    f["state_dict"] = str(d / "state_dict.pt")
    renamed = {("head." + k if k.startswith("9.") else k): v for k, v in sd.items()}  # last layer renamed
    torch.save(renamed, d / "mismatch.pt")
    f["mismatch"] = str(d / "mismatch.pt")
    torch.save({"model": zoo.load(), "epoch": 3}, d / "full_model.pt")  # a pickled nn.Module
    f["full_model"] = str(d / "full_model.pt")
    (d / "factory.py").write_text("from robustbench_cli.zoo import mnist_cnn\n\ndef build():\n    return mnist_cnn()\n")
    f["factory_py"] = str(d / "factory.py")

    x_ok = rng.uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    np.savez(d / "ok.npz", x=x_ok, y=np.array([0, 1, 2, 3]))
    f["ok_npz"] = str(d / "ok.npz")
    np.savez(d / "noxy.npz", images=x_ok, labels=np.arange(4))
    f["noxy_npz"] = str(d / "noxy.npz")
    (d / "empty.npz").write_bytes(b"")
    f["empty_npz"] = str(d / "empty.npz")
    np.savez(d / "f255.npz", x=(x_ok * 255).astype(np.float32), y=np.arange(4))
    f["f255_npz"] = str(d / "f255.npz")
    x_nan = x_ok.copy()
    x_nan[2, 0, 5, 5] = np.nan
    np.savez(d / "nan.npz", x=x_nan, y=np.arange(4))
    f["nan_npz"] = str(d / "nan.npz")
    np.savez(d / "label12.npz", x=x_ok, y=np.array([0, 1, 12, 3]))
    f["label12_npz"] = str(d / "label12.npz")
    np.savez(d / "rgb.npz", x=rng.uniform(0, 1, (4, 3, 28, 28)).astype(np.float32), y=np.arange(4))
    f["rgb_npz"] = str(d / "rgb.npz")

    # an IDX pair that claims 10 images of 28x28 but holds 100 bytes of pixels
    (d / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x00000803, 10, 28, 28) + bytes(100))
    (d / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x00000801, 10) + bytes(10))
    f["trunc_idx"] = str(d / "t10k-images-idx3-ubyte")

    (d / "a_file").write_bytes(b"x")
    f["a_file"] = str(d / "a_file")
    (d / "out_folder.json").mkdir()
    f["folder_json"] = str(d / "out_folder.json")
    return f


def assert_user_error(res, *words: str) -> str:
    """Exit 2, one line on stderr naming the problem (every word, case-insensitive), no traceback anywhere."""
    everything = (res.stdout or "") + (res.stderr or "") + (res.output or "")
    assert "Traceback" not in everything, everything
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith("error:"), msg  # a user error, not an "internal error"
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    assert res.stdout.strip() == ""  # nothing half-rendered on stdout
    return msg


ZOO_W = ["--weights", str(zoo.WEIGHTS)]

# id: (args, with {name} filled from the files fixture; words the message must contain)
CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    # models
    "model-missing-onnx": (["{dir}/nope.onnx", "--data", "{ok_npz}"], ("not found", "nope.onnx")),
    "model-missing-pt": (["{dir}/nope.pt", "--data", "{ok_npz}"], ("not found",)),
    "model-is-folder": (["{folder_model}", "--data", "{ok_npz}"], ("folder",)),
    "model-empty-onnx": (["{empty_onnx}", "--data", "{ok_npz}"], ("empty",)),
    "model-garbage-onnx": (["{garbage_onnx}", "--data", "{ok_npz}"], ("cannot load",)),
    "model-state-dict-not-torchscript": (["{state_dict}", "--data", "{ok_npz}"], ("not TorchScript", "--weights")),
    "factory-file-missing": (["{dir}/missing.py:build", "--data", "{ok_npz}"], ("not found", "missing.py")),
    "factory-attr-missing": (["{factory_py}:nothere", "--data", "{ok_npz}"], ("no attribute", "nothere")),
    "module-missing": (["no_such_pkg_xyz.mod:f", "--data", "{ok_npz}"], ("cannot import", "no_such_pkg_xyz")),
    "weights-missing": ([zoo.SPEC, "--weights", "{dir}/nowhere.pt", "--data", "{ok_npz}"], ("weights", "not found")),
    "weights-mismatch": ([zoo.SPEC, "--weights", "{mismatch}", "--data", "{ok_npz}"],
                         ("does not fit", "missing keys: 9.bias, 9.weight", "unexpected keys: head.9.bias, head.9.weight")),
    "weights-need-unpickling": ([zoo.SPEC, "--weights", "{full_model}", "--data", "{ok_npz}"],
                                ("--trust-checkpoint", "refused")),
    "weights-on-onnx": ([ONNX, "--weights", str(zoo.WEIGHTS), "--data", "{ok_npz}"], ("--weights",)),
    # data
    "data-missing": ([ONNX, "--data", "{dir}/nodata.npz"], ("not found", "nodata.npz")),
    "npz-without-x-y": ([ONNX, "--data", "{noxy_npz}"], ("'x' and 'y'",)),
    "data-empty-file": ([ONNX, "--data", "{empty_npz}"], ("empty",)),
    "idx-truncated": ([ONNX, "--data", "{trunc_idx}"], ("truncated",)),
    "data-unknown-format": ([ONNX, "--data", "{a_file}"], ("unknown data format",)),
    "data-float-0-255": ([ONNX, "--data", "{f255_npz}"], ("--data-scale", "[0,1]")),
    "data-nan": ([ONNX, "--data", "{nan_npz}"], ("NaN",)),
    "labels-outside-classes": ([ONNX, "--data", "{label12_npz}"], ("label 12", "10 classes")),
    "labels-outside-classes-torch": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{label12_npz}"], ("label 12", "10 classes")),
    "shape-digits-into-mnist": ([ONNX, "--data", "digits", "--n", "8"], ("shape", "1x8x8", "1x28x28")),
    "shape-rgb-into-grey": ([ONNX, "--data", "{rgb_npz}"], ("3x28x28", "1x28x28")),
    # threat models
    "eps-zero": ([ONNX, "--data", "{ok_npz}", "--eps", "0"], ("epsilon", "> 0")),
    "eps-negative": ([ONNX, "--data", "{ok_npz}", "--eps", "-1"], ("epsilon", "> 0")),
    "eps-linf-whole-box": ([ONNX, "--data", "{ok_npz}", "--eps", "2"], ("linf epsilon 2", "whole")),
    "eps-linf-one": ([ONNX, "--data", "{ok_npz}", "--eps", "1"], ("whole",)),
    "eps-not-a-number": ([ONNX, "--data", "{ok_npz}", "--eps", "abc"], ("'abc'", "not a number")),
    "eps-with-norm": ([ONNX, "--data", "{ok_npz}", "--eps", "l2:0.5"], ("--threat",)),
    "threat-unknown-norm": ([ONNX, "--data", "{ok_npz}", "--threat", "l3:0.5"], ("unknown norm", "'l3'")),
    "threat-l2-beyond-diagonal": ([ONNX, "--data", "{ok_npz}", "--threat", "l2:100"], ("l2 epsilon 100", "diagonal")),
    "threat-bad-third-part": ([ONNX, "--data", "{ok_npz}", "--threat", "linf:0.1:sideways"], ("targeted",)),
    # battery and goal
    "attacks-unknown": ([ONNX, "--data", "{ok_npz}", "--attacks", "fgsm,deepfool9"], ("unknown attack", "'deepfool9'")),
    "preset-unknown": ([ONNX, "--data", "{ok_npz}", "--preset", "ultra"], ("unknown preset", "'ultra'")),
    "targeted-class-out-of-range": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--targeted", "42"],
                                    ("--targeted", "42", "0..9")),
    "targeted-not-a-class": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--targeted", "foo"], ("--targeted", "'foo'")),
    # outputs
    "report-unknown-suffix": ([ONNX, "--data", "{ok_npz}", "-o", "{dir}/report.xyz"], ("unknown report format", ".xyz")),
    "report-folder-cannot-be-created": ([ONNX, "--data", "{ok_npz}", "-o", "{a_file}/sub/report.json"], ("cannot create folder",)),
    "report-path-is-folder": ([ONNX, "--data", "{ok_npz}", "-o", "{folder_json}"], ("is a folder",)),
    # sizes and selection
    "batch-size-zero": ([ONNX, "--data", "{ok_npz}", "--batch-size", "0"], ("--batch-size", "> 0")),
    "n-zero": ([ONNX, "--data", "{ok_npz}", "--n", "0"], ("--n",)),
    "offset-past-end": ([ONNX, "--data", "{ok_npz}", "--offset", "4"], ("--offset 4", "past the end", "4 samples")),
    "queries-zero": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--queries", "0"], ("--queries",)),
    # preprocessing
    "mean-wrong-channels": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--mean", "0.1,0.2,0.3",
                             "--attacks", "fgsm"], ("--mean", "3 values", "1 channel")),
    "mean-std-wrong-channels": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--mean", "0.5",
                                 "--std", "0.2,0.3", "--attacks", "fgsm"], ("--std", "2 values")),
    "mean-not-numbers": ([zoo.SPEC, *ZOO_W, "--data", "{ok_npz}", "--mean", "a,b,c"], ("--mean", "numbers")),
    "mean-on-onnx": ([ONNX, "--data", "{ok_npz}", "--mean", "0.5"], ("--mean", "ONNX")),
    "std-zero": ([zoo.SPEC, *ZOO_W, "--data", "{ok_npz}", "--std", "0"], ("--std", "> 0")),
    "layout-unknown": ([ONNX, "--data", "{ok_npz}", "--layout", "hwc"], ("--layout",)),
    "output-unknown": ([ONNX, "--data", "{ok_npz}", "--output", "probs"], ("no output named 'probs'", "logits")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(run_cli, files, case):
    args, words = CASES[case]
    res = run_cli("scan", *[a.format(**files) for a in args])
    assert_user_error(res, *words)


def test_mean_without_std_works_and_is_recorded(run_cli, files, tmp_path):
    # --mean alone used to crash building the normalisation (std None); a 1-value mean fits grey data
    out = tmp_path / "r.json"
    res = run_cli("scan", zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", files["ok_npz"], "--mean", "0.1",
                  "--attacks", "fgsm", "--eps", "0.1", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["targets"][0]["mean"] == [0.1]
    # and the normalisation is (x - 0.1) / 1 inside the target
    from robustbench_cli.targets import TargetOptions, load_target

    t = load_target(zoo.SPEC, TargetOptions(weights=str(zoo.WEIGHTS), mean=[0.1], device="cpu"))
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(t.scores(x), zoo.load()(x - 0.1))


# --- a failed run leaves existing reports alone -----------------------------------------------------------
FAILING = {
    "bad-labels": ["--data", "{label12_npz}"],
    "bad-target-class": ["--data", "{ok_npz}", "--attacks", "pgd-nes", "--targeted", "42"],
    "bad-second-report": ["--data", "{ok_npz}", "-o", "{dir}/other.xyz"],
    "bad-eps": ["--data", "{ok_npz}", "--eps", "abc"],
}


@pytest.mark.parametrize("case", list(FAILING))
def test_failed_run_never_overwrites_report(run_cli, files, tmp_path, case):
    sentinel = tmp_path / "report.json"
    payload = b'{"sentinel": true, "bytes": "\x00\xff"}' + os.urandom(32)
    sentinel.write_bytes(payload)
    csv_sentinel = tmp_path / "report.csv"
    csv_sentinel.write_bytes(b"old,csv\n")
    args = [a.format(**files) for a in FAILING[case]]
    res = run_cli("scan", ONNX, "-o", sentinel, "-o", csv_sentinel, *args)
    assert_user_error(res)
    assert sentinel.read_bytes() == payload
    assert csv_sentinel.read_bytes() == b"old,csv\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json"]  # no temp files left


# --- one good scan ---------------------------------------------------------------------------------------
def test_small_scan_writes_all_reports(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli("scan", ONNX, "--data", "mnist:test", "--n", "8", "--attacks", "pgd-nes", "--eps", "0.1",
                  "-o", "tmp/r.json", "-o", "tmp/t.csv", "-o", "tmp/t.md")
    assert "Traceback" not in res.output
    assert res.exit_code == 0, res.stderr
    for name in ("r.json", "t.csv", "t.md"):
        assert (tmp_path / "tmp" / name).is_file() and (tmp_path / "tmp" / name).stat().st_size > 0
    rep = json.loads((tmp_path / "tmp" / "r.json").read_text())
    assert rep["format"].startswith("robust-report/")
    assert rep["data"]["name"] == "mnist:test" and rep["data"]["n"] == 8
    assert len(rep["results"]) == 1
    for r in rep["results"]:
        assert r["threat"] == "linf:0.1"
        assert r["n"] == 8
        assert 0.0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1.0
        assert r["clean_accuracy"] >= 0.75  # the embedded model is trained; 8 held-out digits
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tmp" / "t.csv").read_text())))
    assert len(rows) == 1 and rows[0]["threat"] == "linf:0.1" and int(rows[0]["n"]) == 8
    assert float(rows[0]["clean_accuracy"]) == pytest.approx(rep["results"][0]["clean_accuracy"])
    assert float(rows[0]["robust_accuracy"]) == pytest.approx(rep["results"][0]["robust_accuracy"])
    md = (tmp_path / "tmp" / "t.md").read_text()
    assert md.startswith("# robust report") and "linf:0.1" in md and "mnist:test" in md
    assert "reports:" in res.stdout and "tmp/r.json" in res.stdout
