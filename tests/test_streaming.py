"""Image folders stream: only the selected images are decoded, a chunk at a time, resized per chunk, hashed on the
way, and kept on disk when they would not fit in memory, so a scan's memory does not grow with the data; and the
data kept on disk gives the same hash and the same per-sample results as the same data in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustbench_cli.core.data import DataSpec
from robustbench_cli.core.folders import RowFile

NET = '''import torch
from torch import nn


def Net():
    torch.manual_seed(0)  # the same weights every time it is built
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))
'''


def _folder(root: Path, count: int, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        c = root / f"class{i % 10}"
        c.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(c / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("images"), 3000)


def test_data_kept_on_disk_reads_and_hashes_like_data_in_memory(images, monkeypatch):
    spec = DataSpec(str(images), n=300, shuffle=True, resize=(40, 40), crop=(36, 36))
    memory = spec.load(seed=3)
    monkeypatch.setenv("ROBUST_STREAM_BYTES", "1")
    disk = spec.load(seed=3)
    assert isinstance(disk.x, RowFile) and isinstance(memory.x, np.ndarray)
    assert disk.sha256 == memory.sha256 and disk.describe() == {**memory.describe(), "streamed": "on disk"}
    np.testing.assert_array_equal(disk.x[:], memory.x)
    for key in (slice(5, 50, 7), np.array([299, 0, 1, 2, 150]), np.arange(300) % 3 == 0, 17, -1):
        np.testing.assert_array_equal(disk.x[key], memory.x[key])
    again = DataSpec(str(images), n=300, shuffle=True, resize=(40, 40), crop=(36, 36)).load(seed=3)
    again.digest = None  # computed again from the rows, a chunk at a time
    assert again.sha256 == memory.sha256


def _scan(images: Path, net: Path, n: int, out: Path, stream_bytes: str) -> tuple[dict, int]:
    """Run a scan in a child process; its report and its peak resident memory in KiB."""
    code = ("import resource, runpy, sys\n"
            "sys.argv = ['robust'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('robustbench_cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    res = subprocess.run([sys.executable, "-c", code, "scan", f"{net}:Net", "--data", str(images), "--n", str(n), "--shuffle",
                          "--resize", "160", "--attacks", "fgsm", "--eps", "0.03", "--batch-size", "64",
                          "--no-fast-forward", "-o", str(out)], capture_output=True, text=True, timeout=600,
                         cwd=out.parent, env={**os.environ, "ROBUST_STREAM_BYTES": stream_bytes,
                                              # glibc hands large freed buffers back (mmap) instead of keeping them in
                                              # its heap: the peak then measures the data, not the allocator's habits
                                              "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert res.returncode == 0, res.stderr[-3000:]
    rss = int(res.stdout.strip().split()[-1])
    return json.loads(out.read_text()), rss


@pytest.mark.slow
def test_a_scan_of_a_large_folder_runs_in_bounded_memory(images, tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET)
    # 3,000 images at 160 px are 921 MB as float32, 1,000 are 307 MB: three times the data, about the same memory
    # (the allocator's high-water mark settles within the first few hundred batches; it is not the data)
    small, small_rss = _scan(images, net, 1000, tmp_path / "small.json", str(16 << 20))
    large, large_rss = _scan(images, net, 3000, tmp_path / "large.json", str(16 << 20))
    data_growth = (3000 - 1000) * 3 * 160 * 160 * 4 / 1024  # KiB
    assert large["data"]["streamed"] == "on disk" and large["data"]["n"] == 3000
    assert large_rss - small_rss < 0.25 * data_growth, (small_rss, large_rss, data_growth)
    # the first 1,000 samples of the large scan are the small scan's
    a, b = small["results"][0]["samples"], large["results"][0]["samples"]
    assert all(a[k] == b[k][:1000] for k in ("id", "label", "clean_pred", "robust", "adv_pred", "queries"))
