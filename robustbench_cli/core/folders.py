"""Image folders read in bounded memory: the selected files decoded in chunks, resized and cropped per chunk, hashed
while they stream, and kept in a file of float32 rows read back on demand when they would not fit in memory.

A folder of 50,000 ImageNet validation images is about 30 GB as float32 at 224x224: reading it whole, as an array,
is not an option. The files are listed and selected first (shuffle, offset, n: the same ids as for any source), then
decoded ``CHUNK`` at a time. A selection that decodes to more than :func:`stream_bytes` goes to a :class:`RowFile`
on disk instead of an array: an array-like of rows the scan reads a batch at a time with ``pread`` (never mapped, so
the process's resident memory does not grow with the data; the operating system's page cache does the caching).
The data's sha256 is computed on the way, over exactly the bytes an in-memory array would hash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_cli.core.errors import DataError

CHUNK = 256  # images decoded at once


def stream_bytes() -> int:
    """A selection that decodes to more bytes than this is kept on disk (ROBUST_STREAM_BYTES, default 1 GiB)."""
    text = os.environ.get("ROBUST_STREAM_BYTES", "")
    try:
        return int(float(text)) if text.strip() else 1 << 30
    except ValueError:
        raise DataError(f"ROBUST_STREAM_BYTES must be a number of bytes, got {text!r}") from None


def write_rows(fd: int, rows: np.ndarray, start: int) -> None:
    """Float32 rows written at row ``start`` of the file ``fd`` (rows of ``rows.shape[1:]``)."""
    data = np.ascontiguousarray(rows, dtype=np.float32)
    os.pwrite(fd, data.tobytes(), start * (data[0].nbytes if len(data) else 0))


def read_rows(fd: int, idx: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Rows ``idx`` of a file of float32 rows of ``shape``, in that order: each contiguous run of the index in one
    read, straight into the result."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    out = np.empty((len(idx), *shape), dtype=np.float32)
    row = int(np.prod(shape)) * 4
    k = 0
    while k < len(idx):
        j = k + 1
        while j < len(idx) and idx[j] == idx[j - 1] + 1:
            j += 1
        part = out[k:j]
        if os.preadv(fd, [part.view(np.uint8).reshape(-1).data], int(idx[k]) * row) != (j - k) * row:
            raise DataError("a file of rows kept on disk was cut short")
        k = j
    return out


class RowFile:
    """Float32 rows ``(n, *shape)`` in an unlinked temporary file: indexing reads just those rows and returns an
    array, like indexing an array would. Read-only once written."""

    def __init__(self, n: int, shape: tuple[int, ...], folder: str | None = None):
        self.shape = (n, *shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)
        fd, name = tempfile.mkstemp(prefix="robust-rows-", suffix=".f32", dir=folder)
        os.unlink(name)  # gone with the process, whatever happens to it
        self._fd = fd
        self._written = 0

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except (OSError, AttributeError):
            pass

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def append(self, rows: np.ndarray) -> None:
        write_rows(self._fd, rows, self._written)
        self._written += len(rows)

    def _read(self, start: int, count: int) -> np.ndarray:
        return read_rows(self._fd, np.arange(start, start + count), self.shape[1:])

    def __getitem__(self, key):
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} of {n}")
            return self._read(i, 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read(start, max(stop - start, 0))
            return self[np.arange(start, stop, step)]
        if hasattr(key, "detach"):  # a torch index
            key = key.detach().cpu().numpy()
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"rows out of range 0..{n - 1}")
        return read_rows(self._fd, idx, self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        raise DataError("this data is kept on disk (it does not fit in memory); index it by rows")


def list_folder(path: Path, suffixes: set[str]) -> tuple[list[Path], np.ndarray, list[str]]:
    """Every image of a folder with one sub-folder per class: files in class order, labels, class names."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{path}: an image folder needs one sub-folder per class")
    files, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted(c.iterdir()):
            if f.is_file() and f.suffix.lower() in suffixes:
                files.append(f)
                labels.append(k)
    if not files:
        raise DataError(f"{path}: no images in the class folders ({', '.join(c.name for c in classes[:5])})")
    return files, np.asarray(labels, dtype=np.int64), [c.name for c in classes]


def _open(f: Path):
    from PIL import Image, UnidentifiedImageError

    if f.stat().st_size == 0:
        raise DataError(f"{f}: empty image file")
    try:
        im = Image.open(f)
        im.load()
        return im
    except UnidentifiedImageError:
        raise DataError(f"{f}: unreadable image (not a format Pillow can read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{f}: unreadable image (broken or truncated: {e})") from None


def _kind(mode: str) -> str:
    return "16" if mode.startswith("I") else "F" if mode == "F" else "L" if mode in ("1", "L") else "RGB"


def decode_folder(path: Path, files: list[Path], resize: tuple[int, int] | None, crop: tuple[int, int] | None,
                  scale: float | None, deep_grey, to_unit_range) -> tuple[np.ndarray | RowFile, Any]:
    """The ``files`` (already selected) as float32 (N, C, H, W) in [0,1], resized and cropped, with their sha256
    (a sha256 object fed the bytes an in-memory array would hash). An array, or a :class:`RowFile` when they would
    not fit."""
    from PIL import Image

    kinds, sizes = set(), set()
    for f in files:  # the headers only: every image's mode and size before one pixel is decoded
        if f.stat().st_size == 0:
            raise DataError(f"{f}: empty image file")
        try:
            with Image.open(f) as im:
                kinds.add(_kind(im.mode))
                sizes.add(im.size)
        except (OSError, SyntaxError, ValueError) as e:
            _open(f)  # the same one line as when decoding
            raise DataError(f"{f}: unreadable image ({e})") from None
    if len(sizes) > 1 and resize is None:
        shown = sorted((h, w) for w, h in sizes)[:3]
        raise DataError(f"{path}: images differ in size {shown}; resize them first (--resize HEIGHTxWIDTH)")
    deep = bool(kinds & {"16", "F"})
    if deep and "RGB" in kinds:
        raise DataError(f"{path}: a colour image in a folder of 16-bit grey images; give one kind")
    mode = "L" if deep or kinds == {"L"} else "RGB"
    w, h = next(iter(sizes))
    channels = 1 if mode == "L" else 3
    out_hw = crop or resize or (h, w)
    row_bytes = channels * out_hw[0] * out_hw[1] * 4
    store: np.ndarray | RowFile
    if len(files) * row_bytes > stream_bytes():
        store = RowFile(len(files), (channels, *out_hw))
    else:
        store = np.empty((len(files), channels, *out_hw), dtype=np.float32)
    digest = hashlib.sha256()
    for start in range(0, len(files), CHUNK):
        part = files[start : start + CHUNK]
        arrays = []
        for f in part:
            with _open(f) as im:
                arrays.append(deep_grey(im, f) if deep else np.asarray(im.convert(mode), dtype=np.uint8))
        if resize is not None and len({a.shape for a in arrays}) > 1:
            x = np.concatenate([resize_crop(_unit(a, mode, deep, scale, to_unit_range, path), resize, None)
                                for a in arrays])
            x = resize_crop(x, None, crop)
        else:
            x = resize_crop(_unit(np.stack(arrays), mode, deep, scale, to_unit_range, path), resize, crop)
        digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        if isinstance(store, RowFile):
            store.append(x)
        else:
            store[start : start + len(x)] = x
    return store, digest


def _unit(x: np.ndarray, mode: str, deep: bool, scale, to_unit_range, path: Path) -> np.ndarray:
    """Channels first, in [0,1], as for any source (16-bit grey is already in [0,1] as float32)."""
    if x.ndim == 2:
        x = x[None]
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    return to_unit_range(x, str(path), scale)


def resize_crop(x: np.ndarray, resize: tuple[int, int] | None, crop: tuple[int, int] | None) -> np.ndarray:
    """Bilinear antialiased resize (as torchvision's Resize) and a centre crop, per image."""
    if resize is None and crop is None:
        return x
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x))
    if resize is not None and tuple(t.shape[2:]) != tuple(resize):
        t = F.interpolate(t, size=resize, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)
    if crop is not None:
        h, w = t.shape[2:]
        if crop[0] > h or crop[1] > w:
            raise DataError(f"--crop {crop[0]}x{crop[1]} is larger than the images ({h}x{w}); add --resize")
        top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
        t = t[:, :, top : top + crop[0], left : left + crop[1]]
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)
