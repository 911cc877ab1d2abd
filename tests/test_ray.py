"""Ray for real, on this machine: ``robust scan --workers 2`` gives the single-process per-sample results, and a
worker killed mid-run (its PID, from the run folder) is retried, resumes from its shard's state and still ends with
the identical merged report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustbench_cli import zoo
from robustbench_cli.reports.model import timeless

pytest.importorskip("ray", reason='Ray is the optional extra robust-scan[ray]; the test extra installs it')

ONNX = str(zoo.ONNX)
# batch-independent and slow enough to be caught midway: Square with a 600-query budget, one sample per batch
SCAN = [ONNX, "--data", "mnist", "--n", "24", "--attacks", "square", "--eps", "0.08", "--queries", "600",
        "--batch-size", "1"]


def _results(path: Path) -> list[dict]:
    return timeless(json.loads(path.read_text())["results"])


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("single") / "r.json"
    subprocess.run([sys.executable, "-m", "robustbench_cli", "scan", *SCAN, "-o", str(out)], check=True,
                   capture_output=True, text=True, timeout=600)
    return _results(out)


def _env() -> dict:
    return {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def test_two_ray_workers_give_the_single_process_results(single, tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "robustbench_cli", "scan", *SCAN, "--workers", "2", "-o", str(out)],
                         capture_output=True, text=True, timeout=600, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert _results(out) == single
    report = json.loads(out.read_text())
    assert report["provenance"]["merged"]["shards"] == 8 and report["provenance"]["merged"]["workers"] == 2
    assert "shard" not in report  # the merged report is the whole scan's
    assert not (tmp_path / "r.json.shards").exists()  # the run folder goes once the report is written


def test_a_worker_killed_mid_run_loses_nothing(single, tmp_path):
    out = tmp_path / "r.json"
    folder = tmp_path / "r.json.shards"
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_cli", "scan", *SCAN, "--workers", "2", "--shards",
                             "2", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for progress in sorted((folder / "progress").glob("shard-*.json")) if folder.is_dir() else []:
                try:
                    seen = json.loads(progress.read_text())
                except (OSError, ValueError):
                    continue
                done, total = next(iter(seen.values()), (0, 0))
                if 2 <= done < total - 2:  # midway through its shard: kill that worker
                    pid = int((folder / "pids" / progress.name.replace(".json", ".pid")).read_text())
                    os.kill(pid, signal.SIGKILL)
                    killed = (progress.name, done, total)
                    break
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no worker was caught midway"
    assert proc.returncode == 0, stderr[-2000:]
    assert _results(out) == single


def test_a_driver_stopped_by_sigterm_resumes_to_the_same_report(single, tmp_path):
    out = tmp_path / "r.json"
    folder = tmp_path / "r.json.shards"
    cmd = [sys.executable, "-m", "robustbench_cli", "scan", *SCAN, "--workers", "1", "--shards", "4", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not list(folder.glob("shard-*-of-4.json")):
            time.sleep(0.2)  # wait for one shard to finish, so the stop lands between or inside shards
        assert proc.poll() is None, "the scan ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)  # what CI cancellation sends; Ray's own handler must not take it
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Resume with:" in stderr and "--resume" in stderr and not out.exists()
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert _results(out) == single
    assert not folder.exists()
