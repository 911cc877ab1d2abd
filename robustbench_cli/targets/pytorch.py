"""White-box targets: PyTorch modules (``file.py:attr``, ``package.module:attr``), TorchScript files and timm.

The module is wrapped with its declared preprocessing ((x - mean) / std inside the target), so attacks and
epsilon always live in [0,1] input space. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_cli.core.errors import TargetError, TrustWarning
from robustbench_cli.core.io import existing_file, file_sha256
from robustbench_cli.targets.base import Capability, Target, same_answers

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "params", "weights")


class Normalize(nn.Module):
    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, mean, std, channels: int | None):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if (std_t <= 0).any():
            raise TargetError(f"--std values must be > 0, got {list(map(float, std_t))}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1) if mean_t.numel() > 1 else mean_t.view(1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1) if std_t.numel() > 1 else std_t.view(1))
        if channels is not None:
            self.check_channels(channels)

    def check_channels(self, channels: int) -> None:
        """Refuse a mean/std whose length is neither 1 nor the input's channel count (broadcasting would hide it)."""
        for what, t in (("--mean", self.mean), ("--std", self.std)):
            if t.numel() not in (1, channels):
                raise TargetError(f"{what} has {t.numel()} values but the input has {channels} channel(s)")

    def forward(self, x):
        return (x - self.mean) / self.std


class TorchTarget(Target):
    kind = "torch"
    capabilities = Capability.LABELS | Capability.SCORES | Capability.GRADIENTS
    probes_its_size = True

    def __init__(
        self,
        module: nn.Module,
        name: str,
        *,
        mean=None,
        std=None,
        input_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        batch_size: int = 256,
        device: torch.device | None = None,
        kind: str = "torch",
    ):
        super().__init__(name, batch_size=batch_size, device=device)
        self.kind = kind
        self.input_shape = tuple(input_shape) if input_shape else None
        self.num_classes = num_classes
        channels = self.input_shape[0] if self.input_shape and len(self.input_shape) == 3 else None
        self.preprocess = None
        if mean is not None or std is not None:  # a missing half defaults to the identity (mean 0, std 1)
            self.preprocess = Normalize(mean if mean is not None else [0.0], std if std is not None else [1.0], channels)
        self.model = module.eval().to(self.device)
        if self.preprocess is not None:
            self.preprocess = self.preprocess.to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.details = {"mean": None if mean is None else list(map(float, mean)), "std": None if std is None else list(map(float, std))}

    def _check_channels(self, sample_shape: tuple[int, ...]) -> None:
        if self.preprocess is not None and len(sample_shape) == 3:
            self.preprocess.check_channels(sample_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TargetError(f"{self.name}: the model must return (N, classes) scores, got {shape}")
        return out.float()

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(x.to(self.device))

    # --- the fast route for the attacks' forward-only queries -----------------------------------------------
    fast_forward: bool = True  # False: every query runs the module itself

    def _fast_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Forward-only queries from an onnxruntime export of this target, on the CPU.

        On small CPU models onnxruntime answers 2.5-4.5x faster than eager torch (measured on the MNIST CNNs
        here), and query attacks such as Square spend thousands of forward passes per sample. The export is made
        on the first call and kept only if it agrees with the module on that batch (same classes, scores within
        1e-4 relative); anything else (an export error, a randomised model) falls back to the module. Only the
        attacks' own search uses this route: the harness verifies every candidate on the module itself.
        """
        if self._session is None and self.fast_forward and self.device.type == "cpu":
            self._session = self._export_onnx(x) or False
        if not self._session:
            return self._scores_batch(x)
        xs = x.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self._session.run(None, {"x": xs})[0])

    _session: Any = None  # an onnxruntime InferenceSession once exported, False when the export was refused

    def _export_onnx(self, x: torch.Tensor):
        import contextlib
        import io

        import onnxruntime as ort

        class _Whole(nn.Module):
            def __init__(self, target):
                super().__init__()
                self.target = target.model
                self.pre = target.preprocess

            def forward(self, inp):
                out = self.target(self.pre(inp) if self.pre is not None else inp)
                return (out[0] if isinstance(out, (tuple, list)) else out).float()

        want = self._scores_batch(x)  # before the export, which must not be able to change what the module says
        try:
            buf = io.BytesIO()
            sample = x[: max(1, min(len(x), 2))].detach().to(torch.float32)
            # The exporter puts the module it is given back into that module's training mode afterwards, recursively:
            # a wrapper left in its default (training) mode would switch BatchNorm and dropout in the target to
            # training, so that every later query updated the running statistics. Export an eval-mode wrapper.
            whole = _Whole(self).eval()
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                # the stubs name paths only; the TorchScript exporter (dynamo=False) writes to a file object too
                torch.onnx.export(whole, (sample,), buf,  # type: ignore[arg-type]
                                  input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = max(1, torch.get_num_threads())
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.log_severity_level = 3
            session = ort.InferenceSession(buf.getvalue(), sess_options=opts, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"x": x.detach().to(torch.float32).contiguous().numpy()})[0])
        except Exception as e:  # noqa: BLE001 - any failure means: no fast route, the module answers
            self.details["fast_forward"] = f"off ({type(e).__name__})"
            return None
        finally:
            self.model.eval()  # whatever the exporter did, the target stays in inference mode
            if self.preprocess is not None:
                self.preprocess.eval()
        if not same_answers(got, want, 1e-4):
            self.details["fast_forward"] = "off (the export disagrees with the module)"
            return None
        self.details["fast_forward"] = "onnxruntime"
        return session


# --- loading ------------------------------------------------------------------------------------
def _import_attr(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TargetError(f"model {spec!r}: write file.py:factory, package.module:attr, model.onnx, a TorchScript file or timm:NAME")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise TargetError(f"model file {target!r} not found")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        mod_name = f"_robust_user_{path.stem}_{digest}"  # two files with one name in different folders stay apart
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise TargetError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as e:  # the user's own code failed while importing
            raise TargetError(f"{target}: importing it failed: {e.__class__.__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise TargetError(f"cannot import module {target!r}: {e}") from None
    if not hasattr(module, attr):
        raise TargetError(f"{target} has no attribute {attr!r}")
    return getattr(module, attr)


def _build(obj, spec: str, num_classes: int | None) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise TargetError(f"{spec} is neither an nn.Module nor a class/factory that builds one")
    try:
        built = obj(num_classes=num_classes) if num_classes is not None else obj()
    except TypeError as e:
        if num_classes is not None:
            try:
                built = obj()
            except Exception as e2:
                raise TargetError(f"calling {spec}() failed: {e2.__class__.__name__}: {e2}") from e2
        else:
            raise TargetError(f"calling {spec}() failed: {e}") from e
    except Exception as e:
        raise TargetError(f"calling {spec}() failed: {e.__class__.__name__}: {e}") from e
    if not isinstance(built, nn.Module):
        raise TargetError(f"{spec}() returned {type(built).__name__}, not an nn.Module")
    return built


def load_checkpoint(path: str | Path, *, trust: bool = False):
    """Load a checkpoint with ``weights_only=True``. One that needs full unpickling (which can run any code) is
    refused, unless ``trust``: then it is unpickled fully, with a :class:`TrustWarning` naming the file. A
    checkpoint that loads safely never takes the unsafe route, flag or not."""
    path = existing_file(path, "weights")
    if path.suffix.lower() == ".safetensors":
        return load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise TargetError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(e)})") from None
        if not trust:
            raise TargetError(
                f"{path}: the checkpoint holds Python objects that need full unpickling, which can run code; "
                "refused (pass --trust-checkpoint only if you trust its author)"
            ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        why = _first_sentence(e)
        if "zip archive" in why or "central directory" in why or isinstance(e, EOFError):
            why = f"truncated or corrupt file: {why}"
        raise TargetError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    warnings.warn(f"--trust-checkpoint: fully unpickling {path}, which runs any code it contains", TrustWarning,
                  stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # noqa: S614 - the user's explicit opt-in
    except Exception as e:  # noqa: BLE001 - arbitrary pickled objects fail in arbitrary ways
        raise TargetError(f"{path}: full unpickling failed ({e.__class__.__name__}: {_first_sentence(e)})") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a state dict: tensors only, so nothing in it can run code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TargetError(f"{path}: not a readable safetensors file ({_first_sentence(e)})") from None


def weights_sha256(module: nn.Module) -> str:
    """A hash of the weights the target actually runs (names, shapes, dtypes and bytes of the state dict): the same
    for the same weights whatever file or cache they came from."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _differs_when_rebuilt(build, module: nn.Module) -> bool:
    """Whether building the module again under another seed gives other weights: then it runs on its random
    initialisation. A factory that loads its own weights (or initialises deterministically) builds the same."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch.initial_seed() + 7919)
        try:
            again = build()
        except Exception:  # noqa: BLE001 - a factory that cannot be called twice: nothing to learn
            return False
    mine, theirs = module.state_dict(), again.state_dict()
    floats = [k for k, v in mine.items() if v.is_floating_point() and v.numel() > 1]
    return bool(floats) and any(k in theirs and theirs[k].shape == mine[k].shape
                                and not torch.equal(theirs[k].cpu(), mine[k].cpu()) for k in floats)


def _offline_hint(what: str) -> str:
    """Where cached hub weights are looked for, and how to point elsewhere."""
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        cache = "~/.cache/huggingface/hub"
    torch_hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (f"{what}: the weights are not in the local cache and could not be downloaded. robust looks in "
            f"{cache} (Hugging Face; set HF_HUB_CACHE or HF_HOME to use another) and {torch_hub} (torch hub, "
            "torchvision; set TORCH_HOME); download them once where there is network, or give --weights FILE")


def _cache_first(build):
    """Build from the local Hugging Face cache alone; only when that fails, and offline mode is not set, try the
    network, with the hub's retry messages silenced (the one line robust prints says what happened)."""
    import logging
    import os

    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        return build()
    except Exception:  # noqa: BLE001 - not in the cache (or not loadable from it): the network may still have it
        if saved or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
    finally:
        constants.HF_HUB_OFFLINE = saved
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.CRITICAL)
    try:
        return build()
    finally:
        hub_log.setLevel(level)


def _hub_module(spec: str, pretrained: bool, num_classes: int | None):
    """``timm:NAME``, ``hf-hub:ORG/NAME`` (timm's loader, always pretrained) or ``torchvision:NAME``: the module,
    its source for the report, and a builder for the random-weights check."""
    kwargs: dict[str, Any] = {"num_classes": num_classes} if num_classes is not None else {}
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models():
            raise TargetError(f"torchvision has no model {name!r} (torchvision.models.list_models() lists them)")

        def build():
            return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, progress=False, **kwargs)
        source = f"torchvision:{name}" + (" (DEFAULT weights)" if pretrained else "")
    else:
        import timm

        name = spec[5:] if spec.startswith("timm:") else spec
        if not name or name == "hf-hub:":
            raise TargetError("timm:NAME needs a model name, e.g. timm:resnet18 (or hf-hub:ORG/NAME)")
        pretrained = pretrained or name.startswith("hf-hub:")
        if not name.startswith("hf-hub:") and not timm.list_models(name):
            raise TargetError(f"timm has no model {name!r} (timm.list_models('*resnet*') lists matches)")

        def build():
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        source = (name if name.startswith("hf-hub:") else f"timm:{name}") + (" (pretrained)" if pretrained else "")
    try:
        module = _cache_first(build) if pretrained and not spec.startswith("torchvision:") else build()
    except TargetError:
        raise
    except Exception as e:  # noqa: BLE001 - hub, network and file errors come in many classes
        msg = _first_sentence(e)
        if pretrained and not isinstance(e, (TypeError, ValueError)) or "offline" in msg.lower():
            raise TargetError(f"{_offline_hint(spec)} ({e.__class__.__name__}: {msg})") from None
        raise TargetError(f"{spec}: the model cannot be built ({e.__class__.__name__}: {msg})") from None
    return module, source, build, pretrained


def _first_sentence(e: BaseException) -> str:
    """torch's loading errors run to several sentences of advice; the first says what happened."""
    text = str(e).strip().splitlines()[0].strip() if str(e).strip() else e.__class__.__name__
    return text.split(". ")[0].rstrip(".")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj, path: str, key: str | None = None) -> dict:
    """Find the state dict in a checkpoint: flat, nested under a known key, or at a dotted ``key``."""
    if key:
        for part in key.split("."):
            try:
                obj = obj[int(part)] if isinstance(obj, (list, tuple)) else obj[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise TargetError(f"{path}: no entry {part!r} on the way to --weights-key {key!r}") from None
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for k in STATE_DICT_KEYS:
            if k in obj:
                inner = obj[k]
                if _is_state_dict(inner):
                    return inner
                if isinstance(inner, (list, tuple)) and inner and all(_is_state_dict(s) for s in inner):
                    if len(inner) == 1:
                        return inner[0]
                    raise TargetError(
                        f"{path}: '{k}' holds {len(inner)} state dicts (a cascade or ensemble); pick one with --weights-key {k}.0"
                    )
        keys = ", ".join(map(str, list(obj)[:8]))
        raise TargetError(f"{path}: no state dict found (top-level keys: {keys}); name it with --weights-key")
    raise TargetError(f"{path}: holds a {type(obj).__name__}, not a state dict")


def apply_state_dict(module: nn.Module, sd: dict, path: str) -> None:
    sd = dict(sd)
    own = module.state_dict()
    for prefix in ("module.", "model.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in own):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    missing = sorted(set(own) - set(sd))
    # checkpoints from PyTorch < 0.4.1 have no BatchNorm step counters: in eval mode the counter is never read
    for k in [k for k in missing if k.endswith("num_batches_tracked")]:
        sd[k] = own[k]
        missing.remove(k)
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise TargetError(f"{path} does not fit the model: " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise TargetError(f"{path} does not fit the model: shape mismatch at " + "; ".join(bad[:4]))
    module.load_state_dict(sd, strict=True)


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in z.namelist())


def load_torch_target(
    spec: str,
    *,
    weights: str | None = None,
    weights_key: str | None = None,
    num_classes: int | None = None,
    mean=None,
    std=None,
    batch_size: int = 256,
    device: torch.device | None = None,
    trust_checkpoint: bool = False,
    pretrained: bool = False,
) -> TorchTarget:
    input_shape = None
    default_size: tuple[int, ...] | None = None
    kind = "torch"
    hashes = []
    build = None
    source = None
    if spec.startswith(("timm:", "hf-hub:", "torchvision:")):
        module, source, build, pretrained = _hub_module(spec, pretrained, num_classes)
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", {}) or {}
        if "input_size" in cfg:  # the size it was trained at; convolutional nets take others: checked on the data
            default_size = tuple(int(v) for v in cfg["input_size"])
        if mean is None and std is None and "mean" in cfg:
            mean, std = list(cfg["mean"]), list(cfg["std"])
        num_classes = num_classes or getattr(module, "num_classes", None)
        if num_classes is None and hasattr(module, "fc") and hasattr(module.fc, "out_features"):
            num_classes = int(module.fc.out_features)
        kind = spec.split(":", 1)[0].replace("hf-hub", "timm")
        hashes.append(spec)
    else:
        path = Path(spec).expanduser()
        if ":" not in spec or path.is_file():
            existing_file(spec, "model")
            if not is_torchscript(path):
                raise TargetError(
                    f"{spec} is not TorchScript or ONNX; if it is a state dict, give the architecture as "
                    "file.py:Class and this file with --weights"
                )
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError as e:
                raise TargetError(f"{spec}: TorchScript file does not load ({str(e).splitlines()[0]})") from None
            kind = "torchscript"
            hashes.append(file_sha256(path))
        else:
            if pretrained:
                raise TargetError("--pretrained applies to timm:NAME and torchvision:NAME; give a module spec its "
                                  "weights with --weights FILE")
            obj = _import_attr(spec)
            module = _build(obj, spec, num_classes)
            if not isinstance(obj, nn.Module):
                def build():
                    return _build(obj, spec, num_classes)
            hashes.append(spec)
    if weights:
        if kind == "torchscript":
            raise TargetError("a TorchScript file carries its weights; --weights is for module specs and timm")
        sd = extract_state_dict(load_checkpoint(weights, trust=trust_checkpoint), weights, weights_key)
        apply_state_dict(module, sd, weights)
        hashes.append(file_sha256(Path(weights).expanduser()))
    target = TorchTarget(
        module, spec, mean=mean, std=std, input_shape=input_shape, num_classes=num_classes,
        batch_size=batch_size, device=device, kind=kind,
    )
    target.sha256 = hashlib.sha256("|".join(hashes).encode()).hexdigest() if len(hashes) > 1 or kind != "torchscript" else hashes[0]
    if weights:
        target.details["weights"] = str(weights)
    if source:
        target.details["source"] = source
    target.details["weights_sha256"] = weights_sha256(module)
    if not weights and not pretrained and build is not None and _differs_when_rebuilt(build, module):
        target.details["random_weights"] = True  # a failed `random-weights` check in every report of this target
    if default_size:
        target.details["default_input_size"] = list(default_size)
    return target


# --- BPDA ---------------------------------------------------------------------------------------
def apply_bpda(target: TorchTarget, names: list[str]) -> None:
    """``--bpda NAME[,NAME...]``: the named submodules keep their forward output but backpropagate as the identity.

    Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False
    Sense of Security"), in its straight-through form (Bengio et al. 2013): a layer ``f`` with ``f(x) ~ x`` whose
    gradient is zero or useless (rounding, JPEG, thermometer codes, ...) is differentiated as if it were ``x``. A
    forward hook returns ``f(x).detach() + (x - x.detach())``: exactly ``f(x)`` in value, gradient 1 towards ``x``.
    Names are those of ``model.named_modules()`` of the user's module (the ``--mean/--std`` normalisation wraps it
    from outside and is not part of the names). Outside autograd the hook leaves the output untouched.
    """
    if isinstance(target.model, torch.jit.ScriptModule):
        raise TargetError("--bpda needs the Python module (file.py:factory, package.module:attr or timm:NAME): "
                          "TorchScript modules take no hooks")
    modules = dict(target.model.named_modules())
    modules.pop("", None)  # the whole model: its output is the scores, not an approximation of its input
    for name in names:
        if name not in modules:
            known = list(modules)
            shown = ", ".join(known[:10]) + (f" (+{len(known) - 10} more)" if len(known) > 10 else "")
            raise TargetError(f"--bpda {name}: {target.name} has no submodule {name!r} "
                              f"(its modules: {shown or 'none'})")
    for name in names:
        modules[name].register_forward_hook(_straight_through(name))
    target.details["bpda"] = list(names)


def _straight_through(name: str):
    def hook(module, args, out):
        x = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
        if x is None or not isinstance(out, torch.Tensor):
            raise TargetError(f"--bpda {name}: the module must take one tensor and return one tensor")
        if out.shape != x.shape:
            raise TargetError(f"--bpda {name}: the module maps shape {tuple(x.shape)} to {tuple(out.shape)}; BPDA "
                              "differentiates it as the identity, so input and output shapes must match")
        if not (torch.is_grad_enabled() and x.requires_grad):
            return None
        return out.detach() + (x - x.detach()).to(out.dtype)

    return hook
