"""Adversarial examples as images: PNG files people can open, the folder ``--save-examples`` writes, and the
amplified perturbation the HTML report shows. The pixels are exactly those the evaluation re-checked on the target
after 8-bit rounding (:mod:`robustbench_cli.evaluation.examples`)."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.io import writable_parent
from robustbench_cli.core.naming import short_name
from robustbench_cli.evaluation.examples import Example, from_u8

INDEX = "index.csv"
INDEX_COLUMNS = ["target", "threat", "id", "label", "goal", "targeted", "clean_pred", "attack", "adv_pred", "distance",
                 "file", "original", "saved_pred", "saved_distance", "inside_threat", "still_fools"]


def image_array(sample: np.ndarray) -> np.ndarray:
    """A sample as an image array: (H, W) grey or (H, W, 3) RGB; flat vectors of a square length become squares."""
    a = np.asarray(sample)
    if a.ndim == 3:
        c = a.shape[0]
        if c == 1:
            return a[0]
        if c == 3:
            return np.ascontiguousarray(a.transpose(1, 2, 0))
        return np.concatenate(list(a), axis=1)  # other channel counts side by side, grey
    if a.ndim == 2:
        return a
    d = a.shape[0]
    s = math.isqrt(d)
    return a.reshape(s, s) if s * s == d else a.reshape(1, d)


def png_bytes(sample_u8: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_array(sample_u8)).save(buf, format="PNG")
    return buf.getvalue()


def perturbation_u8(example: Example) -> tuple[np.ndarray, float]:
    """The perturbation of the quantised image, amplified to fill the grey range around mid-grey, and the factor."""
    clean = example.clean if example.clean is not None else from_u8(example.original)
    delta = from_u8(example.adversarial) - clean.astype(np.float32)
    peak = float(np.abs(delta).max())
    amp = 0.5 / peak if peak > 0 else 1.0
    return np.clip(np.rint((0.5 + amp * delta) * 255), 0, 255).astype(np.uint8), amp


def check_folder(path: str | Path) -> Path:
    """Refuse before any work: the folder must be new or empty, and its parent writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"--save-examples {path}: it is a file, not a folder")
    if p.is_dir() and any(p.iterdir()):
        raise UserError(f"--save-examples {path}: the folder is not empty (give a new or empty folder)")
    writable_parent(p, f"--save-examples {path}")
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def save_folder(examples: list[Example], folder: Path) -> Path:
    """Write every example as PNG (adversarial and original) and an index CSV; the folder appears whole or not at all.

    Each PNG is read back and compared with the pixels that were re-checked.
    """
    from PIL import Image

    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent if str(folder.parent) else "."))
    try:
        tmp.chmod(0o755)
        dirs: dict[tuple[str, str], str] = {}
        used: set[str] = set()
        rows = []
        for e in examples:
            key = (e.target, e.threat)
            if key not in dirs:
                base = f"{_slug(short_name(e.target))}/{_slug(e.threat)}"
                name, k = base, 2
                while name in used:
                    name, k = f"{base}-{k}", k + 1
                used.add(name)
                dirs[key] = name
                (tmp / name).mkdir(parents=True)
            rel = f"{dirs[key]}/{e.id}.png"
            rel_orig = f"{dirs[key]}/{e.id}-original.png"
            for r, pixels in ((rel, e.adversarial), (rel_orig, e.original)):
                (tmp / r).write_bytes(png_bytes(pixels))
                with Image.open(tmp / r) as im:
                    if not np.array_equal(np.asarray(im), image_array(pixels)):
                        raise RuntimeError(f"{r}: the PNG does not hold the pixels that were checked")
            e.file, e.original_file = rel, rel_orig
            rows.append({
                "target": e.target, "threat": e.threat, "id": e.id, "label": e.label, "goal": e.goal,
                "targeted": e.targeted, "clean_pred": e.clean_pred, "attack": e.attack, "adv_pred": e.adv_pred,
                "distance": f"{e.distance:.6g}", "file": rel, "original": rel_orig, "saved_pred": e.saved_pred,
                "saved_distance": f"{e.saved_distance:.6g}", "inside_threat": e.inside, "still_fools": e.still_adversarial,
            })
        with open(tmp / INDEX, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        if folder.is_dir():
            folder.rmdir()  # empty: checked before the scan
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
