"""White-box target kinds: module specs, TorchScript, timm, checkpoint layouts and in-target normalisation."""

import numpy as np
import pytest
import torch

from robustbench_cli import zoo
from robustbench_cli.core.data import EvalSet, load_eval_set
from robustbench_cli.core.errors import TargetError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import PRESETS, check_compatible, evaluate
from robustbench_cli.targets import TargetSpec, load_target


@pytest.fixture(scope="module")
def digits8():
    return load_eval_set("mnist:test", n=32, shuffle=True)


def test_module_attr_spec_with_weights_predicts_like_the_module(digits8):
    t = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS)))
    check_compatible(t, digits8)
    x = torch.as_tensor(digits8.x)
    assert torch.equal(t.predict(x), zoo.load()(x).argmax(1))
    assert t.kind == "torch" and t.num_classes == 10 and len(t.sha256) == 64


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix"])
def test_nested_and_prefixed_checkpoints_load(tmp_path, digits8, wrap):
    sd = torch.load(zoo.WEIGHTS, weights_only=True)
    if wrap == "module_prefix":
        obj = {"module." + k: v for k, v in sd.items()}
    else:
        obj = {wrap: sd, "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    t = load_target(TargetSpec(zoo.SPEC, weights=str(path)))
    x = torch.as_tensor(digits8.x)
    assert torch.equal(t.predict(x), zoo.load()(x).argmax(1))


def test_list_of_state_dicts_needs_a_key(tmp_path):
    sd = torch.load(zoo.WEIGHTS, weights_only=True)
    path = tmp_path / "cascade.pt"
    torch.save({"state_dict": [sd, sd]}, path)
    with pytest.raises(TargetError, match="--weights-key state_dict.0"):
        load_target(TargetSpec(zoo.SPEC, weights=str(path)))
    load_target(TargetSpec(zoo.SPEC, weights=str(path), weights_key="state_dict.1"))


def test_torchscript_file_is_a_white_box(tmp_path, digits8):
    path = tmp_path / "net.pt"
    torch.jit.script(zoo.load()).save(str(path))
    t = load_target(str(path))
    assert t.kind == "torchscript"
    check_compatible(t, digits8)
    x = torch.as_tensor(digits8.x)
    assert torch.equal(t.predict(x), zoo.load()(x).argmax(1))
    ev = evaluate(t, digits8, [ThreatModel.parse("linf:0.3")], PRESETS["quick"])
    assert ev.results[0].robust_accuracy < ev.results[0].clean_accuracy  # gradients flow through TorchScript


def test_mean_std_applied_inside_the_target(tmp_path, digits8):
    mean, std = 0.1307, 0.3081
    net = zoo.load()
    x = torch.as_tensor(digits8.x)
    t = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), mean=[mean], std=[std]))
    assert torch.allclose(t.scores(x), net((x - mean) / std), atol=1e-5)
    assert t.describe()["mean"] == [mean]


def test_timm_model_built_without_download():
    t = load_target(TargetSpec("timm:test_resnet", num_classes=10))
    assert t.kind == "timm" and t.num_classes == 10
    assert t.input_shape is None  # it takes the data's size; its default is a hint for --resize
    c, h, w = t.details["default_input_size"]
    data = EvalSet(x=np.random.default_rng(0).uniform(size=(3, c, h, w)).astype(np.float32),
                   y=np.array([0, 1, 2]), ids=np.arange(3), name="random")
    check_compatible(t, data)
    assert t.scores(torch.as_tensor(data.x)).shape == (3, 10)
    assert t.details["mean"] is not None  # timm's own normalisation is applied inside the target


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(TargetError, match="timm has no model"):
        load_target("timm:no_such_net_xyz")


def test_a_checkpoint_from_before_batchnorm_counted_its_steps_loads(tmp_path):
    """PyTorch < 0.4.1 wrote BatchNorm without num_batches_tracked (the akamaster CIFAR ResNets): not a mismatch."""
    from torch import nn

    from robustbench_cli.targets.pytorch import apply_state_dict

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    apply_state_dict(fresh, old, "old.pth")
    assert torch.equal(fresh[0].weight, net[0].weight)
    with pytest.raises(TargetError, match=r"missing keys: 1.weight"):
        apply_state_dict(fresh, {k: v for k, v in old.items() if k != "1.weight"}, "cut.pth")
