"""The generator attack: a trained network G maps an input to its perturbation in one forward pass (AdvGAN,
Xiao et al. 2018, "Generating Adversarial Examples with Adversarial Networks").

G ends in tanh, so ``u = G(x)`` lies in [-1, 1]^d; the candidate is ``x + eps * u`` for Linf and
``x + eps * u / ||u||_2`` for L2, at the scan's epsilon (the harness projects and verifies it as any other). G is
trained by ``robust generator train`` (:mod:`robustbench_cli.training.advgan`) against surrogate model(s) or a white-box
target; the attack itself never queries the target, so a sample costs one query, the harness's verification.
It is untargeted: under a targeted goal its candidates rarely reach the target class.

The file is ``torch.save`` of ``{"format": "robust-generator/1", "config": {...}, "state_dict": {...}}``: a state
dict and a JSON-able description of the architecture and of the training, loaded with ``weights_only=True``
(never a pickled module).

Example::

    robust generator train --surrogate examples/architectures.py:LeNet5@lenet5.pt --data mnist:train --eps 0.3 -o g.pt
    robust scan model.onnx --data mnist:test --eps 0.3 --generator g.pt
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_cli.attacks.base import Attack, register
from robustbench_cli.core.errors import TargetError
from robustbench_cli.core.io import existing_file, file_sha256
from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.base import Capability

FORMAT = "robust-generator/1"


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=True)


class _Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), _norm(ch), nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1), _norm(ch))

    def forward(self, x):
        return x + self.body(x)


class GeneratorNet(nn.Module):
    """AdvGAN's generator, scaled down: two strided convolutions down, residual blocks, two transposed
    convolutions up, tanh. Inputs (N, C, H, W) in [0, 1]; output the same shape in [-1, 1]. Any H, W: the output
    is resized to the input's size when the strides do not divide it."""

    def __init__(self, channels: int = 1, width: int = 16, blocks: int = 2):
        super().__init__()
        w = width
        self.down = nn.Sequential(
            nn.Conv2d(channels, w, 3, 1, 1), _norm(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), _norm(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), _norm(4 * w), nn.ReLU(),
        )
        self.middle = nn.Sequential(*[_Residual(4 * w) for _ in range(blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), _norm(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), _norm(w), nn.ReLU(),
            nn.Conv2d(w, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.middle(self.down(x)))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.tanh(out)


class Discriminator(nn.Module):
    """A small convolutional critic: one logit per input, 'real image' against 'perturbed image'."""

    def __init__(self, channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), _norm(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), _norm(4 * w), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(4 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).mean(dim=(2, 3))).squeeze(1)


def perturbation(u: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """The generator's output ``u`` in [-1, 1]^d scaled into the threat's ball: ``eps * u`` (Linf) or
    ``eps * u / ||u||_2`` (L2)."""
    if norm is Norm.LINF:
        return eps * u
    n = u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (u.dim() - 1))
    return eps * u / n


# --- the file ------------------------------------------------------------------------------------------------------
def save_generator(path: str | Path, net: GeneratorNet, config: dict) -> Path:
    """Write ``{format, config, state_dict}`` atomically; ``config`` must hold ``architecture`` (GeneratorNet's
    arguments) and may hold any JSON-able description of the training."""
    import io
    import json

    json.dumps(config)  # JSON-able, or fail here rather than write something weights_only cannot read
    p = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "config": config,
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, buf)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(p)
    return p


_CACHE: dict[tuple, tuple[GeneratorNet, dict, str]] = {}


def load_generator(path: str | Path) -> tuple[GeneratorNet, dict, str]:
    """The generator, its config and the file's sha256. Loaded with ``weights_only=True``; cached per file state."""
    p = existing_file(path, "generator")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (unpickling refused, not a torch file, truncated: one line)
        raise TargetError(f"generator {str(path)!r} cannot be read with weights_only=True: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not isinstance(blob.get("config"), dict):
        raise TargetError(f"generator {str(path)!r} is not a {FORMAT} file (write one with `robust generator train`)")
    arch = blob["config"].get("architecture") or {}
    try:
        net = GeneratorNet(**arch)
        net.load_state_dict(blob["state_dict"], strict=True)
    except (TypeError, RuntimeError, KeyError) as e:
        raise TargetError(f"generator {str(path)!r}: its weights do not fit its architecture {arch} "
                          f"({str(e).strip().splitlines()[0]})") from None
    net.eval()
    for q in net.parameters():
        q.requires_grad_(False)
    _CACHE[key] = (net, blob["config"], file_sha256(p))
    return _CACHE[key]


# --- the attack ----------------------------------------------------------------------------------------------------
@register
class GeneratorAttack(Attack):
    name = "generator"
    family = "generative"
    requires = Capability.LABELS  # nothing from the target: the perturbation is one forward pass of G
    summary = "one forward pass of a trained perturbation generator (AdvGAN, Xiao et al. 2018)"

    def __init__(self, *, generator: str | None = None):
        self.generator = None if generator is None else str(generator)
        self._net = None
        self._info: dict = {}
        if generator is not None:
            self._net, cfg, sha = load_generator(generator)
            self._info = {"sha256": sha, "trained": {k: cfg.get(k) for k in ("threat", "surrogates", "surrogate_sha256",
                                                                          "data", "epochs", "seed") if k in cfg}}
            self._channels = int(cfg["architecture"].get("channels", 1))

    def config(self) -> dict:
        return {"generator": self.generator, **self._info}

    def unsupported_reason(self, capabilities, threat, dim=None):
        if self._net is None:
            return "needs a trained generator: pass --generator FILE (from `robust generator train`)"
        return super().unsupported_reason(capabilities, threat, dim)

    def check_shape(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse data the generator cannot take (before any work)."""
        if len(sample_shape) != 3 or sample_shape[0] != self._channels:
            raise TargetError(f"generator {self.generator} takes images with {self._channels} channel(s), "
                              f"not inputs shaped {'x'.join(map(str, sample_shape))}")

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        return 0  # the generator's output is the candidate: the target only answers the harness's verification

    def run(self, oracle, x, goal, threat, rng):
        if self._net is None:
            raise TargetError("the generator attack needs --generator FILE")
        net = self._net.to(x.device)
        with torch.no_grad():
            u = net(x)
        return x + perturbation(u, threat.norm, threat.epsilon)
