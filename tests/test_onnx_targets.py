"""ONNX targets as real exports come: dynamic or fixed batch, NHWC, flat inputs, probabilities, several outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_cli import zoo
from robustbench_cli.core.data import EvalSet, load_eval_set
from robustbench_cli.core.errors import DataError, TargetError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import check_compatible, evaluate, get_battery
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.onnxrt import OnnxTarget


class Net(nn.Module):
    """A small CNN on 1x28x28 digits; ``layout`` says what its ONNX input looks like, the permute is inside."""

    def __init__(self, layout: str = "nchw", head: str = "logits"):
        super().__init__()
        self.layout, self.head = layout, head
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        elif self.layout == "flat":
            x = x.reshape(-1, 1, 28, 28)
        h = torch.relu(self.conv(x)).flatten(1)
        z = self.fc(h)
        if self.head == "probabilities":
            return torch.softmax(z, dim=1)
        if self.head == "several":
            return h[:, :7], z, torch.softmax(z, dim=1)
        return z


def make_net(seed: int = 0, **kw) -> Net:
    torch.manual_seed(seed)
    net = Net(**kw).eval()
    with torch.no_grad():  # spread the logits so that predictions differ across inputs
        net.fc.weight.mul_(20)
    return net


def export(model: nn.Module, shape: tuple[int, ...], path: Path, *, dynamic: bool = True,
           outputs: tuple[str, ...] = ("out",)) -> str:
    kw = {}
    if dynamic:
        kw["dynamic_axes"] = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(shape),), str(path), input_names=["input"], output_names=list(outputs),
                          opset_version=17, dynamo=False, **kw)
    return str(path)


def inputs(n: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def torch_ref(model: Net, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.layout == "nhwc":
            return model(x.permute(0, 2, 3, 1))
        if model.layout == "flat":
            return model(x.reshape(len(x), -1))
        return model(x)


def assert_same_model(target: OnnxTarget, model: Net, x: torch.Tensor) -> None:
    s = target.scores(x)
    ref = torch_ref(model, x)
    assert s.shape == ref.shape == (len(x), 10)
    torch.testing.assert_close(s, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(target.predict(x), ref.argmax(dim=1))
    assert len(set(ref.argmax(dim=1).tolist())) > 1  # the check means something: several classes appear


def evalset(x: torch.Tensor, y=None) -> EvalSet:
    y = np.zeros(len(x), dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
    return EvalSet(x=x.numpy(), y=y, ids=np.arange(len(x)), name="t")


# --- batch --------------------------------------------------------------------------------------------
def test_dynamic_batch(tmp_path):
    net = make_net()
    t = load_target(export(net, (1, 1, 28, 28), tmp_path / "dyn.onnx"))
    assert isinstance(t, OnnxTarget)
    assert t.fixed_batch is None and t.layout == "nchw"
    assert t.input_shape == (1, 28, 28) and t.flat_dim is None and t.num_classes == 10
    assert t.details["onnx_input"]["shape"][0] == "batch"
    assert_same_model(t, net, inputs(20))
    for n in (1, 2, 5):
        x = inputs(n, seed=n)
        torch.testing.assert_close(t.scores(x), torch_ref(net, x), atol=1e-4, rtol=1e-4)
    # chunking by the target's batch size gives the same answers
    small = load_target(TargetSpec(str(tmp_path / "dyn.onnx"), batch_size=6))
    torch.testing.assert_close(small.scores(inputs(20)), t.scores(inputs(20)))


@pytest.mark.parametrize("fixed", [1, 7])
@pytest.mark.parametrize("batch_size", [256, 3, 8])
def test_fixed_batch_is_chunked_and_padded(tmp_path, fixed, batch_size):
    net = make_net(seed=fixed)
    path = export(net, (fixed, 1, 28, 28), tmp_path / f"fixed{fixed}.onnx", dynamic=False)
    t = load_target(TargetSpec(path, batch_size=batch_size))
    assert t.fixed_batch == fixed and t.details["fixed_batch"] == fixed
    assert t.input_shape == (1, 28, 28) and t.num_classes == 10
    x = inputs(20, seed=fixed)  # 20 is not a multiple of 7 (or of 3 or 8): the last chunk is padded
    assert_same_model(t, net, x)
    assert t.scores(x[:1]).shape == (1, 10)
    # the padding never leaks into the answers: each row alone gives its row of the batch answer
    s = t.scores(x)
    for i in (0, 6, 7, 19):
        torch.testing.assert_close(t.scores(x[i : i + 1])[0], s[i], atol=1e-5, rtol=1e-5)


def test_fixed_batch_raw_session_refuses_other_sizes(tmp_path):
    # the reason chunking exists: onnxruntime itself rejects a batch of another size
    path = export(make_net(), (7, 1, 28, 28), tmp_path / "fixed7.onnx", dynamic=False)
    t = load_target(path)
    with pytest.raises(TargetError, match="onnxruntime failed"):
        t._run(np.zeros((5, 1, 28, 28), np.float32))


# --- layouts --------------------------------------------------------------------------------------------
def test_nhwc_detected(tmp_path):
    net = make_net(layout="nhwc")
    path = export(net, (1, 28, 28, 1), tmp_path / "nhwc.onnx")
    t = load_target(path)
    assert t.layout == "nhwc" and t.details["layout"] == "nhwc"
    assert t.input_shape == (1, 28, 28)  # what the data must look like: channels first, as every EvalSet
    assert t.accepts((1, 28, 28)) and not t.accepts((28, 28, 1))
    assert_same_model(t, net, inputs())
    explicit = load_target(TargetSpec(path, layout="nhwc"))
    torch.testing.assert_close(explicit.scores(inputs()), t.scores(inputs()))


def test_layout_override(tmp_path):
    # (N, 3, 6, 3) could be NCHW 3x6x3 or NHWC 3x6 with 3 channels: detection guesses NCHW, --layout corrects it
    class RGB(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.fc = nn.Linear(54, 10)
            with torch.no_grad():
                self.fc.weight.mul_(20)

        def forward(self, x):  # x is NHWC (N, 3, 6, 3)
            return self.fc(x.permute(0, 3, 1, 2).flatten(1))

    net = RGB().eval()
    path = export(net, (1, 3, 6, 3), tmp_path / "rgb_nhwc.onnx")
    guessed = load_target(path)
    assert guessed.layout == "nchw" and guessed.input_shape == (3, 6, 3)
    t = load_target(TargetSpec(path, layout="nhwc"))
    assert t.layout == "nhwc" and t.input_shape == (3, 3, 6)
    x = torch.rand(12, 3, 3, 6, generator=torch.Generator().manual_seed(1))  # NCHW data: 3 channels, 3x6 pixels
    with torch.no_grad():
        ref = net(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(t.scores(x), ref, atol=1e-5, rtol=1e-5)
    check_compatible(t, evalset(x))
    with pytest.raises(DataError, match="shape"):
        check_compatible(guessed, evalset(x))

    # forcing nchw on the NHWC digit model makes the 1x28x28 data not fit, with a clear error
    nhwc = export(make_net(layout="nhwc"), (1, 28, 28, 1), tmp_path / "nhwc.onnx")
    forced = load_target(TargetSpec(nhwc, layout="nchw"))
    assert forced.input_shape == (28, 28, 1)
    with pytest.raises(DataError, match="1x28x28"):
        check_compatible(forced, evalset(inputs(4)))
    with pytest.raises(TargetError, match="--layout"):
        load_target(TargetSpec(nhwc, layout="chwn"))
    with pytest.raises(TargetError, match="not flat"):
        load_target(TargetSpec(nhwc, layout="flat"))


@pytest.mark.parametrize("shape", [(1, 784), (1, 784, 1)], ids=["N,784", "N,784,1"])
def test_flat_inputs(tmp_path, shape):
    net = make_net(layout="flat")
    path = export(net, shape, tmp_path / "flat.onnx")
    t = load_target(path)
    assert t.layout == "flat" and t.flat_dim == 784 and t.input_shape is None
    assert t.accepts((1, 28, 28)) and t.accepts((784,)) and not t.accepts((1, 8, 8))
    assert_same_model(t, net, inputs())  # images are flattened on the way in
    flat = inputs().reshape(20, 784)
    torch.testing.assert_close(t.scores(flat), t.scores(inputs()))
    check_compatible(t, evalset(flat))
    with pytest.raises(DataError, match="784"):
        check_compatible(t, evalset(torch.rand(3, 1, 8, 8)))


# --- outputs ----------------------------------------------------------------------------------------
def _kind_through_harness(path: str, x: torch.Tensor) -> tuple[str, dict]:
    t = load_target(path)
    with torch.no_grad():
        y = t.predict(x).numpy()
    ev = evaluate(t, evalset(x, y), [ThreatModel.parse("linf:0.1")], get_battery("default", ["fgsm"]))
    res = ev.results[0]
    assert res.clean_accuracy == 1.0  # labels are the model's own predictions
    assert res.attacks[0].skipped  # fgsm needs gradients; an ONNX black box has none
    return t.output_kind, ev.target


def test_probabilities_and_logits_detected_by_harness(tmp_path):
    x = inputs(16)
    probs = export(make_net(head="probabilities"), (1, 1, 28, 28), tmp_path / "probs.onnx")
    logits = export(make_net(head="logits"), (1, 1, 28, 28), tmp_path / "logits.onnx")
    kind, desc = _kind_through_harness(probs, x)
    assert kind == "probabilities" and desc["output_kind"] == "probabilities"
    kind, desc = _kind_through_harness(logits, x)
    assert kind == "logits" and desc["output_kind"] == "logits"
    # the direct detector agrees, and losses see log-probabilities for a probability model
    t = load_target(probs)
    s = t.scores(x)
    assert t.detect_output_kind(s) == "probabilities"
    torch.testing.assert_close(t.as_logits(s).softmax(dim=1), s, atol=1e-5, rtol=1e-4)
    assert load_target(logits).detect_output_kind(load_target(logits).scores(x)) == "logits"


def test_several_outputs(tmp_path):
    net = make_net(head="several")
    path = export(net, (1, 1, 28, 28), tmp_path / "multi.onnx", outputs=("features", "logits", "probs"))
    x = inputs()
    with torch.no_grad():
        feats, z, p = net(x)
    first = load_target(path)  # default: the first output
    assert first.output_name == "features" and first.num_classes == 7
    assert first.details["onnx_outputs"] == ["features", "logits", "probs"]
    t = load_target(TargetSpec(path, output="logits"))
    assert t.output_name == "logits" and t.num_classes == 10 and t.details["onnx_output"] == "logits"
    torch.testing.assert_close(t.scores(x), z, atol=1e-4, rtol=1e-4)
    tp = load_target(TargetSpec(path, output="probs"))
    torch.testing.assert_close(tp.scores(x), p, atol=1e-5, rtol=1e-4)
    assert torch.equal(tp.predict(x), t.predict(x))
    with pytest.raises(TargetError) as e:
        load_target(TargetSpec(path, output="scores"))
    msg = str(e.value)
    assert "'scores'" in msg and "features, logits, probs" in msg and "\n" not in msg


# --- ONNX / torch parity of the embedded model ------------------------------------------------------
def test_zoo_onnx_matches_torch_on_mnist_test():
    data = load_eval_set("mnist:test")
    x = torch.as_tensor(data.x)
    white = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu"))
    black = load_target(str(zoo.ONNX))
    assert white.kind == "torch" and black.kind == "onnx" and black.num_classes == 10
    s_white, s_black = white.scores(x), black.scores(x)
    assert s_white.shape == s_black.shape == (1000, 10)
    assert torch.equal(s_white.argmax(dim=1), s_black.argmax(dim=1))
    assert float((s_white - s_black).abs().max()) <= 1e-4
    with torch.no_grad():
        torch.testing.assert_close(s_white, zoo.load()(x), atol=1e-5, rtol=1e-5)
    accuracy = float((s_black.argmax(dim=1).numpy() == data.y).mean())
    assert accuracy > 0.9  # a trained model, so the parity above compares meaningful predictions
