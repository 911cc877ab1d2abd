"""Bad inputs through the CLI: exit code 2, one clear line on stderr, never a traceback; reports stay intact."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
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
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items() if k != "9.bias"}, str(d / "half.safetensors"))
    f["half_safetensors"] = str(d / "half.safetensors")
    (d / "corrupt.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"not\": \"a header")
    f["corrupt_safetensors"] = str(d / "corrupt.safetensors")
    np.savez(d / "rgb32.npz", x=rng.uniform(0, 1, (4, 3, 32, 32)).astype(np.float32), y=np.arange(4))
    f["rgb32_npz"] = str(d / "rgb32.npz")
    (d / "exits.py").write_text(
        "import sys\nimport torch\n\n\nclass Net(torch.nn.Module):\n"
        "    def forward(self, x):\n        sys.exit(0)  # a model that ends the process: CI must not read a pass\n")
    f["exit_py"] = str(d / "exits.py")
    import gzip as _gzip
    import pickle as _pickle

    header = bytes([0, 0, 8, 3]) + (80_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2  # 63 MB declared
    (d / "bomb-images-idx3-ubyte.gz").write_bytes(_gzip.compress(header + bytes(80_000 * 784), 9))
    (d / "bomb-labels-idx1-ubyte.gz").write_bytes(_gzip.compress(bytes([0, 0, 8, 1]) + (80_000).to_bytes(4, "big")
                                                                  + bytes(80_000)))
    f["gz_bomb"] = str(d / "bomb-images-idx3-ubyte.gz")
    (d / "memo_batch").mkdir()
    (d / "memo_batch" / "test_batch").write_bytes(_pickle.dumps({b"data": [bytes(3072)] * 100, b"labels": [0] * 100}))
    f["memo_cifar"] = str(d / "memo_batch")
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
    f.update(_onnx_files(d, rng))
    f.update(_torch_files(d))
    f.update(_data_files(d, rng, x_ok))
    return f


def _onnx_graph(nodes, inputs, outputs, inits=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13),
                                                                 helper.make_opsetid("com.example", 1)])


def _onnx_files(d: Path, rng) -> dict[str, str]:
    """Tiny graphs onnxruntime refuses or that are no classifier: x (n,1,28,28) -> flatten -> matmul -> (n,10)."""
    onnx = pytest.importorskip("onnx", reason="the onnx package (in the test extra) builds the bad ONNX graphs")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])
    w = numpy_helper.from_array(np.full((784, 10), 0.01, np.float32), "w")
    flat, matmul = helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])
    out: dict[str, str] = {}

    def save(name, model, **kw):
        onnx.save_model(model, d / name, **kw)
        out[name.replace(".", "_")] = str(d / name)

    save("custom_op.onnx", _onnx_graph([flat, helper.make_node("Frobnicate", ["f"], ["y"], domain="com.example")], [x], [y]))
    save("external.onnx", _onnx_graph([flat, matmul], [x], [y], [w]), save_as_external_data=True,
         all_tensors_to_one_file=True, location="external.weights", size_threshold=0)
    (d / "external.weights").unlink()  # the graph names it; it is gone
    save("dangling.onnx", _onnx_graph([flat, helper.make_node("MatMul", ["f", "nowhere"], ["y"])], [x], [y]))
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["n", 10])
    save("two_inputs.onnx", _onnx_graph([flat, matmul], [x, x2], [y], [w]))
    xi = helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 1, 28, 28])
    cast = helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)
    save("int_input.onnx", _onnx_graph([cast, helper.make_node("Flatten", ["xf"], ["f"]), matmul], [xi], [y], [w]))
    scalar = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    save("scalar_output.onnx", _onnx_graph([flat, helper.make_node("ReduceSum", ["f"], ["y"], keepdims=0)], [x], [scalar]))
    nan = numpy_helper.from_array(np.full((784, 10), np.nan, np.float32), "w")
    save("nan_outputs.onnx", _onnx_graph([flat, matmul], [x], [y], [nan]))
    whole = Path(ONNX).read_bytes()
    (d / "truncated.onnx").write_bytes(whole[: len(whole) // 2])
    out["truncated_onnx"] = str(d / "truncated.onnx")
    return out


class _CreatesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), which creates one empty file and does nothing else."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _torch_files(d: Path) -> dict[str, str]:
    sd = zoo.load().state_dict()
    torch.save({"state_dict": sd, "note": _CreatesAFile(d / "pwned-by-scan.txt")}, d / "payload.pt")
    whole = Path(zoo.WEIGHTS).read_bytes()
    (d / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (d / "weights_folder.pt").mkdir()
    torch.save(torch.zeros(3), d / "tensor.pt")
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_state_dict.pt")
    (d / "factories.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Summed(nn.Module):\n    def forward(self, x):\n        return x.flatten(1).sum(1)\n\n\n"
        "def summed():\n    return Summed()\n\n\n"
        "def number():\n    return 3\n\n\n"
        "def needs_gpu():\n    raise ValueError('no GPU here')\n")
    (d / "import_fails.py").write_text("raise RuntimeError('boom at import')\n")
    return {"payload_pt": str(d / "payload.pt"), "truncated_pt": str(d / "truncated.pt"),
            "weights_folder": str(d / "weights_folder.pt"), "tensor_pt": str(d / "tensor.pt"),
            "no_state_dict_pt": str(d / "no_state_dict.pt"), "factories": str(d / "factories.py"),
            "import_fails": str(d / "import_fails.py")}


def _data_files(d: Path, rng, x_ok: np.ndarray) -> dict[str, str]:
    from PIL import Image

    out: dict[str, str] = {}

    def npz(name, **arrays):
        np.savez(d / name, **arrays)
        out[name.replace(".", "_")] = str(d / name)

    y4 = np.arange(4)
    npz("negative_label.npz", x=x_ok, y=np.array([0, -1, 2, 3]))
    npz("fraction_label.npz", x=x_ok, y=np.array([0, 1.5, 2, 3]))
    npz("text_label.npz", x=x_ok, y=np.array(["0", "1", "2", "3"]))
    npz("three_labels.npz", x=x_ok, y=np.arange(3))
    npz("size_zero.npz", x=np.zeros((4, 1, 0, 0), np.float32), y=y4)
    npz("no_rows.npz", x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros(0, np.int64))
    npz("ambiguous.npz", x=np.zeros((4, 5, 5, 5), np.float32), y=y4)
    npz("int32.npz", x=np.zeros((4, 1, 28, 28), np.int32), y=y4)
    npz("rank5.npz", x=np.zeros((4, 1, 1, 28, 28), np.float32), y=y4)
    npz("objects.npz", x=np.array([None, 1, 2, 3], dtype=object), y=y4)
    whole = (d / "ok.npz").read_bytes()
    (d / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    out["truncated_npz"] = str(d / "truncated.npz")

    digit = np.zeros((28, 28), np.uint8)
    (d / "no_classes").mkdir()
    Image.fromarray(digit).save(d / "no_classes" / "0.png")  # images, but not in class folders
    for c in ("cat", "dog"):
        (d / "empty_classes" / c).mkdir(parents=True)  # class folders without images
    for name, content in (("corrupt", b"\x89PNG\r\n\x1a\n and then nothing"), ("zero_byte", b"")):
        (d / name / "a").mkdir(parents=True)
        Image.fromarray(digit).save(d / name / "a" / "0.png")
        (d / name / "a" / "1.png").write_bytes(content)
    for c, size in (("a", 28), ("b", 20)):
        (d / "sizes" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(d / "sizes" / c / "0.png")
    for name in ("no_classes", "empty_classes", "corrupt", "zero_byte", "sizes"):
        out[f"images_{name}"] = str(d / name)

    (d / "cifar_payload").mkdir()
    payload = {"data": _CreatesAFile(d / "pwned-by-cifar.txt"), "labels": [0]}
    (d / "cifar_payload" / "test_batch").write_bytes(pickle.dumps(payload))
    (d / "data_batch_1").write_bytes(b"not a pickle at all")
    (d / "lonely").mkdir()
    (d / "lonely" / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x00000803, 1, 28, 28) + bytes(784))
    (d / "nonempty").mkdir()
    (d / "nonempty" / "old.png").write_bytes(b"x")
    out.update(cifar_payload=str(d / "cifar_payload"), cifar_garbage=str(d / "data_batch_1"),
               idx_labels=str(d / "t10k-labels-idx1-ubyte"), idx_lonely=str(d / "lonely" / "train-images-idx3-ubyte"),
               nonempty=str(d / "nonempty"))
    return out


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
NO_EPS_CASES = {"eps-missing"}  # the cases about the threat itself; every other case names one, as a scan must


def with_eps(args: list[str], case: str = "") -> list[str]:
    """The arguments with ``--eps 0.3`` added when they name no threat (a scan has no default epsilon)."""
    if case in NO_EPS_CASES or "--eps" in args or "--threat" in args or "--help" in args:
        return args
    return [*args, "--eps", "0.3"]

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
    "weights-pickle-payload": ([zoo.SPEC, "--weights", "{payload_pt}", "--data", "{ok_npz}"],
                               ("full unpickling", "refused", "--trust-checkpoint")),
    "weights-truncated": ([zoo.SPEC, "--weights", "{truncated_pt}", "--data", "{ok_npz}"],
                          ("not a readable PyTorch checkpoint", "truncated or corrupt")),
    "weights-is-folder": ([zoo.SPEC, "--weights", "{weights_folder}", "--data", "{ok_npz}"], ("weights", "is a folder")),
    "weights-not-a-state-dict": ([zoo.SPEC, "--weights", "{tensor_pt}", "--data", "{ok_npz}"],
                                 ("holds a Tensor", "not a state dict")),
    "weights-no-state-dict-inside": ([zoo.SPEC, "--weights", "{no_state_dict_pt}", "--data", "{ok_npz}"],
                                     ("no state dict found", "epoch, lr", "--weights-key")),
    "weights-key-missing": ([zoo.SPEC, *ZOO_W, "--weights-key", "ema", "--data", "{ok_npz}"],
                            ("no entry 'ema'", "--weights-key")),
    "weights-count-mismatch": ([zoo.SPEC, *ZOO_W, *ZOO_W, "--data", "{ok_npz}"],
                               ("2 --weights for 1 PyTorch model(s)",)),
    "models-repeated": ([ONNX, ONNX, "--data", "{ok_npz}"], ("the same model is given twice",)),
    "model-spec-empty": (["", "--data", "{ok_npz}"], ("the model spec is empty",)),
    "model-spec-malformed": (["foo:", "--data", "{ok_npz}"], ("'foo:'", "file.py:factory")),
    "timm-without-name": (["timm:", "--data", "{ok_npz}"], ("timm:NAME needs a model name",)),
    "factory-import-fails": (["{import_fails}:build", "--data", "{ok_npz}"], ("importing it failed", "boom at import")),
    "factory-call-fails": (["{factories}:needs_gpu", "--data", "{ok_npz}"], ("calling", "failed", "no GPU here")),
    "factory-returns-non-module": (["{factories}:number", "--data", "{ok_npz}"], ("returned int", "not an nn.Module")),
    "torch-output-not-scores": (["{factories}:summed", "--device", "cpu", "--data", "{ok_npz}"],
                                ("must return (N, classes) scores",)),
    "onnx-truncated": (["{truncated_onnx}", "--data", "{ok_npz}"], ("onnxruntime cannot load it", "Protobuf")),
    "onnx-unknown-operator": (["{custom_op_onnx}", "--data", "{ok_npz}"],
                              ("operator onnxruntime lacks", "com.example:Frobnicate")),
    "onnx-external-data-missing": (["{external_onnx}", "--data", "{ok_npz}"],
                                   ("external data file 'external.weights'", "missing")),
    "onnx-graph-invalid": (["{dangling_onnx}", "--data", "{ok_npz}"], ("onnxruntime cannot load it", "'nowhere'")),
    "onnx-two-inputs": (["{two_inputs_onnx}", "--data", "{ok_npz}"], ("2 inputs", "single-input")),
    "onnx-integer-input": (["{int_input_onnx}", "--data", "{ok_npz}"], ("tensor(int64)", "float image input")),
    "onnx-output-not-scores": (["{scalar_output_onnx}", "--data", "{ok_npz}"], ("output 'y'", "not (N, classes)")),
    "model-nan-outputs": (["{nan_outputs_onnx}", "--data", "{ok_npz}"], ("returns NaN or inf", "clean inputs")),
    "device-unknown": ([zoo.SPEC, *ZOO_W, "--device", "tpu", "--data", "{ok_npz}"], ("--device 'tpu'", "not a device")),
    "num-classes-below-two": ([zoo.SPEC, *ZOO_W, "--num-classes", "1", "--data", "{ok_npz}"],
                              ("--num-classes", "at least 2")),
    "access-unknown": ([ONNX, "--data", "{ok_npz}", "--access", "everything"],
                       ("--access must be gradients, scores or labels", "'everything'")),
    "output-on-torch": ([zoo.SPEC, *ZOO_W, "--output", "logits", "--data", "{ok_npz}"], ("--output", "ONNX output")),
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
    "data-spec-empty": ([ONNX, "--data", ""], ("--data is empty",)),
    "data-builtin-misspelled": ([ONNX, "--data", "mnsit"],
                                ("'mnsit' not found", "did you mean 'mnist'", "mnist, mnist:train, mnist:test, digits")),
    "npz-truncated": ([ONNX, "--data", "{truncated_npz}"], ("not a readable .npz", "truncated or corrupt")),
    "npz-object-arrays": ([ONNX, "--data", "{objects_npz}"], ("Python objects", "refused")),
    "npz-length-mismatch": ([ONNX, "--data", "{three_labels_npz}"], ("4 images but 3 labels",)),
    "npz-no-rows": ([ONNX, "--data", "{no_rows_npz}"], ("no images",)),
    "images-size-zero": ([ONNX, "--data", "{size_zero_npz}"], ("images of size 0", "(4, 1, 0, 0)")),
    "labels-negative": ([ONNX, "--data", "{negative_label_npz}"], ("negative label -1",)),
    "labels-not-integers": ([ONNX, "--data", "{fraction_label_npz}"], ("labels must be whole class indices",)),
    "labels-text": ([ONNX, "--data", "{text_label_npz}"], ("labels of type <U1", "not class indices")),
    "data-layout-ambiguous": ([ONNX, "--data", "{ambiguous_npz}"], ("cannot tell channels", "--data-layout")),
    "data-layout-unknown": ([ONNX, "--data", "{ok_npz}", "--data-layout", "chw"], ("--data-layout", "'chw'")),
    "data-integer-pixels": ([ONNX, "--data", "{int32_npz}"], ("integer pixels of type int32", "--data-scale")),
    "data-rank-5": ([ONNX, "--data", "{rank5_npz}"], ("images must be", "(4, 1, 1, 28, 28)")),
    "data-scale-zero": ([ONNX, "--data", "{ok_npz}", "--data-scale", "0"], ("--data-scale must be > 0",)),
    "image-folder-without-classes": ([ONNX, "--data", "{images_no_classes}"], ("one sub-folder per class",)),
    "image-folder-empty": ([ONNX, "--data", "{images_empty_classes}"], ("no images in the class folders", "cat, dog")),
    "image-corrupt": ([ONNX, "--data", "{images_corrupt}"], ("1.png", "unreadable image")),
    "image-zero-bytes": ([ONNX, "--data", "{images_zero_byte}"], ("1.png", "empty image file")),
    "image-sizes-differ": ([ONNX, "--data", "{images_sizes}"], ("images differ in size",)),
    "cifar-pickle-payload": ([ONNX, "--data", "{cifar_payload}"], ("not a CIFAR-10 python batch", "refusing to load")),
    "cifar-not-a-pickle": ([ONNX, "--data", "{cifar_garbage}"], ("not a CIFAR-10 python batch",)),
    "idx-label-file-given": ([ONNX, "--data", "{idx_labels}"], ("that is a label file",)),
    "idx-labels-missing": ([ONNX, "--data", "{idx_lonely}"], ("train-labels-idx1-ubyte", "not found beside")),
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
    "threat-l2-zero": ([ONNX, "--data", "{ok_npz}", "--threat", "l2:0"], ("epsilon must be > 0",)),
    "threat-l2-not-finite": ([ONNX, "--data", "{ok_npz}", "--threat", "l2:inf"], ("'inf'", "finite")),
    "threat-l2-at-diagonal": ([ONNX, "--data", "{ok_npz}", "--threat", "l2:28"], ("l2 epsilon 28", "diagonal", "28.00")),
    "threat-without-epsilon": ([ONNX, "--data", "{ok_npz}", "--threat", "linf:"], ("is not NORM:EPS",)),
    "eps-division-by-zero": ([ONNX, "--data", "{ok_npz}", "--eps", "1/0"], ("'1/0'", "not a number")),
    "threat-repeated": ([ONNX, "--data", "{ok_npz}", "--eps", "0.1", "--threat", "linf:1/10"],
                        ("threat models repeat", "linf:0.1, linf:1/10")),
    # battery and goal
    "attacks-unknown": ([ONNX, "--data", "{ok_npz}", "--attacks", "fgsm,deepfool9"], ("unknown attack", "'deepfool9'")),
    "preset-unknown": ([ONNX, "--data", "{ok_npz}", "--preset", "ultra"], ("unknown preset", "'ultra'")),
    "attacks-empty": ([ONNX, "--data", "{ok_npz}", "--attacks", " , "], ("--attacks needs attack names",)),
    "transfer-without-surrogate": ([ONNX, "--data", "{ok_npz}", "--attacks", "mi-fgsm"],
                                   ("transfer attacks need a surrogate", "--surrogate")),
    "generator-without-file": ([ONNX, "--data", "{ok_npz}", "--attacks", "generator"],
                               ("needs a trained generator", "--generator")),
    "detector-options-without-detector": ([ONNX, "--data", "{ok_npz}", "--detector-fpr", "0.1"], ("need --detector",)),
    "detector-fpr-and-threshold": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--detector", ONNX,
                                    "--detector-fpr", "0.1", "--detector-threshold", "0.5"],
                                   ("--detector-fpr or --detector-threshold, not both",)),
    "preset-and-attacks": ([ONNX, "--data", "{ok_npz}", "--preset", "quick", "--attacks", "square"],
                           ("--preset or --attacks, not both",)),
    "targeted-class-out-of-range": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--targeted", "42"],
                                    ("--targeted", "42", "0..9")),
    "targeted-not-a-class": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--targeted", "foo"], ("--targeted", "'foo'")),
    # outputs
    "report-unknown-suffix": ([ONNX, "--data", "{ok_npz}", "-o", "{dir}/report.xyz"], ("unknown report format", ".xyz")),
    "report-folder-cannot-be-created": ([ONNX, "--data", "{ok_npz}", "-o", "{a_file}/sub/report.json"], ("cannot create folder",)),
    "report-path-is-folder": ([ONNX, "--data", "{ok_npz}", "-o", "{folder_json}"], ("is a folder",)),
    "report-under-a-file": ([ONNX, "--data", "{ok_npz}", "-o", "{a_file}/report.json"],
                            ("cannot create folder", "a_file is a file, not a folder")),
    "html-examples-negative": ([ONNX, "--data", "{ok_npz}", "--html-examples", "-1"], ("--html-examples must be >= 0",)),
    "save-examples-is-a-file": ([ONNX, "--data", "{ok_npz}", "--save-examples", "{a_file}"],
                                ("--save-examples", "it is a file")),
    "save-examples-not-empty": ([ONNX, "--data", "{ok_npz}", "--save-examples", "{nonempty}"],
                                ("--save-examples", "not empty")),
    "time-budget-unreadable": ([ONNX, "--data", "{ok_npz}", "--time-budget", "soon"], ("--time-budget", "'soon'")),
    "time-budget-zero": ([ONNX, "--data", "{ok_npz}", "--time-budget", "0s"], ("--time-budget must be > 0",)),
    "resume-without-state": ([ONNX, "--data", "{ok_npz}", "--resume", "-o", "{dir}/never-ran.json"],
                             ("--resume", "no state file")),
    # sizes and selection
    "batch-size-zero": ([ONNX, "--data", "{ok_npz}", "--batch-size", "0"], ("--batch-size", "> 0")),
    "n-zero": ([ONNX, "--data", "{ok_npz}", "--n", "0"], ("--n",)),
    "offset-past-end": ([ONNX, "--data", "{ok_npz}", "--offset", "4"], ("--offset 4", "past the end", "4 samples")),
    "seed-negative": ([ONNX, "--data", "{ok_npz}", "--seed", "-1", "--shuffle"], ("--seed must be in 0..",)),
    "offset-negative": ([ONNX, "--data", "{ok_npz}", "--offset", "-1"], ("--offset must be >= 0",)),
    "queries-zero": ([ONNX, "--data", "{ok_npz}", "--attacks", "pgd-nes", "--queries", "0"], ("--queries",)),
    # preprocessing
    "mean-wrong-channels": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--mean", "0.1,0.2,0.3",
                             "--attacks", "fgsm"], ("--mean", "3 values", "1 channel")),
    "mean-std-wrong-channels": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--mean", "0.5",
                                 "--std", "0.2,0.3", "--attacks", "fgsm"], ("--std", "2 values")),
    "mean-not-numbers": ([zoo.SPEC, *ZOO_W, "--data", "{ok_npz}", "--mean", "a,b,c"], ("--mean", "numbers")),
    "mean-empty": ([zoo.SPEC, *ZOO_W, "--data", "{ok_npz}", "--mean", ""], ("--mean needs at least one number",)),
    "mean-wrong-channels-onnx": ([ONNX, "--data", "{ok_npz}", "--mean", "0.5,0.5,0.5"], ("--mean", "3 values", "1 channel")),
    "weights-safetensors-missing-keys": ([zoo.SPEC, "--weights", "{half_safetensors}", "--data", "{ok_npz}"],
                                         ("does not fit", "missing keys: 9.bias")),
    "weights-safetensors-corrupt": ([zoo.SPEC, "--weights", "{corrupt_safetensors}", "--data", "{ok_npz}"],
                                    ("not a readable safetensors file",)),
    "timm-unknown-model": (["timm:no_such_net_xyz", "--data", "{ok_npz}"], ("timm has no model", "no_such_net_xyz")),
    "input-size-refused": (["timm:test_maxvit", "--data", "{rgb32_npz}", "--attacks", "fgsm"],
                           ("rejects inputs of shape 3x32x32", "--resize 160")),
    "hub-model-not-cached": (["hf-hub:robust-tests/not-cached", "--data", "{ok_npz}"],
                             ("not in the local cache", "HF_HUB_CACHE")),
    "eot-huge": ([ONNX, "--data", "{ok_npz}", "--eot", "1000000000000"], ("--eot must be in 1..10,000",)),
    "model-calls-sys-exit": (["{exit_py}:Net", "--data", "{ok_npz}"], ("called sys.exit(0)", "no report")),
    "data-gzip-bomb": ([ONNX, "--data", "{gz_bomb}"], ("unpacks to", "over the limit", "ROBUST_MAX_DATA_BYTES")),
    "data-cifar-memo-references": ([ONNX, "--data", "{memo_cifar}"], ("CIFAR 'data' must be a uint8 array",)),
    "eps-missing": ([ONNX, "--data", "{ok_npz}"], ("give the threat model", "--eps 0.3", "no default")),
    "resize-not-a-size": ([ONNX, "--data", "{ok_npz}", "--resize", "big"], ("--resize", "HEIGHTxWIDTH")),
    "crop-larger-than-images": ([ONNX, "--data", "{ok_npz}", "--crop", "64"], ("--crop 64x64", "larger than the images")),
    "pretrained-not-a-hub-model": ([ONNX, "--data", "{ok_npz}", "--pretrained"], ("--pretrained applies to timm:NAME",)),
    "std-zero": ([zoo.SPEC, *ZOO_W, "--data", "{ok_npz}", "--std", "0"], ("--std", "> 0")),
    "layout-unknown": ([ONNX, "--data", "{ok_npz}", "--layout", "hwc"], ("--layout",)),
    "output-unknown": ([ONNX, "--data", "{ok_npz}", "--output", "probs"], ("no output named 'probs'", "logits")),
    # EOT and BPDA (tests/test_eot_bpda.py has the randomised, NaN and quantised models)
    "eot-zero": ([ONNX, "--data", "{ok_npz}", "--eot", "0"], ("--eot must be in 1..",)),
    "threads-zero": ([ONNX, "--data", "{ok_npz}", "--threads", "0"], ("--threads must be in 1..1024",)),
    "precision-unknown": ([ONNX, "--data", "{ok_npz}", "--precision", "int8"], ("--precision must be fp32, bf16 or fp16",
                                                                                "'int8'")),
    "eot-without-gradient-attacks": ([ONNX, "--data", "{ok_npz}", "--eot", "4", "--attacks", "square"],
                                     ("--eot 4", "none of the battery's attacks")),
    "bpda-on-onnx": ([ONNX, "--data", "{ok_npz}", "--bpda", "0"], ("--bpda", "ONNX")),
    "bpda-unknown-module": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--bpda", "quant"],
                            ("--bpda quant", "no submodule", "its modules: 0, 1, 2")),
    "bpda-changes-shape": ([zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", "{ok_npz}", "--bpda", "0", "--attacks", "fgsm"],
                           ("--bpda 0", "shapes must match")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(run_cli, files, case, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub model not in the cache fails at once, with no network retries
    monkeypatch.setenv("ROBUST_MAX_DATA_BYTES", str(50 << 20))  # every good input here is far smaller
    args, words = CASES[case]
    res = run_cli("scan", *with_eps([a.format(**files) for a in args], case))
    assert_user_error(res, *words)


# `robust demo` takes few options; the report folder is under the fixture's folder so no run writes to the cwd
DEMO_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "demo-n-zero": (["--n", "0"], ("--n must be > 0",)),
    "demo-eps-not-a-number": (["--eps", "abc"], ("'abc'", "not a number")),
    "demo-eps-whole-box": (["--eps", "1"], ("linf epsilon 1", "whole")),
    "demo-report-dir-is-a-file": (["--report-dir", "{a_file}"], ("cannot create folder", "is a file, not a folder")),
}


@pytest.mark.parametrize("case", list(DEMO_CASES))
def test_demo_bad_input_is_one_clear_line(run_cli, files, case):
    args, words = DEMO_CASES[case]
    res = run_cli("demo", *[a.format(**files) for a in args], *([] if "--report-dir" in args else
                                                                ["--report-dir", f"{files['dir']}/demo-{case}"]))
    assert_user_error(res, *words)
    assert not Path(files["dir"], f"demo-{case}", "report.json").exists()


# --- untrusted files ---------------------------------------------------------------------------------------
def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(run_cli, tmp_path):
    """The payload's only effect is open(marker, "w"): it creates one empty file in tmp_path."""
    marker = tmp_path / "created-by-unpickling.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": zoo.load().state_dict(), "note": _CreatesAFile(marker)}, evil)
    assert not marker.exists()  # saving it ran nothing
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32), y=np.arange(4))
    base = ["scan", zoo.SPEC, "--weights", evil, "--data", data, "--device", "cpu", "--attacks", "fgsm",
            "--eps", "0.1", "-o", tmp_path / "r.json"]

    assert_user_error(run_cli(*base), "--trust-checkpoint", "refused")
    assert not marker.exists()  # weights_only=True: the payload never ran
    assert not (tmp_path / "r.json").exists()

    res = run_cli(*base, "--trust-checkpoint")
    assert res.exit_code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--trust-checkpoint" in warnings[0] and "evil.pt" in warnings[0], res.stderr
    assert "Traceback" not in res.stderr and "UserWarning" not in res.stderr
    # expected: with the opt-in the checkpoint is fully unpickled, so the payload runs and the file appears
    assert marker.exists()


def test_a_safe_checkpoint_takes_the_safe_route_even_with_the_flag(run_cli, files, tmp_path):
    res = run_cli("scan", zoo.SPEC, *ZOO_W, "--trust-checkpoint", "--data", files["ok_npz"], "--device", "cpu",
                  "--attacks", "fgsm", "--eps", "0.1", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.stderr
    assert "warning:" not in res.stderr  # it loaded with weights_only=True: nothing was unpickled fully


def test_cifar_pickle_payload_never_runs(run_cli, files):
    assert_user_error(run_cli("scan", ONNX, "--data", files["cifar_payload"], "--eps", "0.3"), "refusing to load")
    assert not Path(files["dir"], "pwned-by-cifar.txt").exists()
    assert_user_error(run_cli("scan", zoo.SPEC, "--weights", files["payload_pt"], "--data", files["ok_npz"], "--eps", "0.3"))
    assert not Path(files["dir"], "pwned-by-scan.txt").exists()


def test_help_and_readme_say_a_factory_file_runs_user_code(run_cli):
    import re

    def flat(text: str) -> str:  # rich wraps help text in boxes: drop the frame and join the lines
        return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))

    help_text = flat(run_cli("scan", "--help").stdout)
    assert "file.py:factory imports and runs that Python file: only point it at code you trust" in help_text
    assert "--trust-checkpoint" in help_text and "runs any code" in help_text
    readme = flat((Path(__file__).resolve().parents[1] / "README.md").read_text())
    assert "A `file.py:factory` spec imports and runs that Python file, so only point it at code you trust" in readme
    assert "`--trust-checkpoint`" in readme and "docs/bad-inputs.md" in readme


def test_mean_without_std_works_and_is_recorded(run_cli, files, tmp_path):
    # --mean alone used to crash building the normalisation (std None); a 1-value mean fits grey data
    out = tmp_path / "r.json"
    res = run_cli("scan", zoo.SPEC, *ZOO_W, "--device", "cpu", "--data", files["ok_npz"], "--mean", "0.1",
                  "--attacks", "fgsm", "--eps", "0.1", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["targets"][0]["mean"] == [0.1]
    # and the normalisation is (x - 0.1) / 1 inside the target
    from robustbench_cli.targets import TargetSpec, load_target

    t = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), mean=[0.1], device="cpu"))
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
    res = run_cli("scan", ONNX, "-o", sentinel, "-o", csv_sentinel, *with_eps(args))
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
