"""Interrupted scans: kill -9 and Ctrl-C lose nothing but the batch in flight, --resume continues to the same
per-sample results as a scan that never stopped, --time-budget stops cleanly and says what completed, and the same
seed gives the same per-sample results whatever the batch size."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robustbench_cli import zoo
from robustbench_cli.cli.commands import parse_duration
from robustbench_cli.core.errors import UserError

ONNX = str(zoo.ONNX)
# a scan long enough to be caught midway: Square with a 1,000-query budget, one sample per batch
SLOW = [ONNX, "--data", "mnist", "--n", "30", "--attacks", "square", "--eps", "0.05", "--queries", "1000",
        "--batch-size", "1"]
KEYS = ("robust", "adv_pred", "queries", "queries_at_break", "broken_by", "clean_pred", "goal")


def samples(path: Path) -> dict:
    rep = json.loads(Path(path).read_text())
    return {r["threat"]: r["samples"] for r in rep["results"]}


def assert_same_samples(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for threat in a:
        for k in KEYS:
            assert a[threat][k] == b[threat][k], (threat, k)
        for k in ("distance", "min_distance"):
            da = np.array([np.nan if v is None else v for v in a[threat][k]], dtype=float)
            db = np.array([np.nan if v is None else v for v in b[threat][k]], dtype=float)
            np.testing.assert_allclose(da, db, rtol=1e-6, atol=1e-7)


def _progress(state: Path) -> tuple[int, int] | None:
    """(samples finished, samples planned) of the first attack in a state file, or None if unreadable yet."""
    try:
        with np.load(state, allow_pickle=False) as z:
            return int(z["0/e0/done"].sum()), int(z["0/e0/attempted"].sum())
    except (OSError, KeyError, ValueError):
        return None


def _start_and_stop(tmp: Path, sig: int) -> subprocess.CompletedProcess:
    """Start the slow scan in a subprocess, stop it with ``sig`` once some (not all) samples are done."""
    report = tmp / "r.json"
    state = tmp / "r.json.state.npz"
    # a job started in the background by a non-interactive shell inherits SIGINT ignored (and so would the scan):
    # give the scan the terminal's default, as a user's Ctrl-C finds it
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_cli", "scan", *SLOW, "-o", str(report)], cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            p = _progress(state)
            if p is not None and 0 < p[0] < p[1] - 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the scan finished before it could be stopped midway: make it slower"
        assert time.monotonic() < deadline, "the scan made no progress in 5 minutes"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same scan, never interrupted."""
    from typer.testing import CliRunner

    from robustbench_cli.cli import app

    out = tmp_path_factory.mktemp("ref") / "ref.json"
    res = CliRunner().invoke(app, ["scan", *SLOW, "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["complete"] is True and "incomplete" not in rep
    assert not (out.parent / "ref.json.state.npz").exists()  # a finished scan leaves no state behind
    return samples(out)


def test_kill_9_then_resume_gives_the_uninterrupted_results(tmp_path, run_cli, reference):
    done = _start_and_stop(tmp_path, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    state = tmp_path / "r.json.state.npz"
    finished, planned = _progress(state)
    assert 0 < finished < planned
    res = run_cli("scan", *SLOW, "-o", tmp_path / "r.json", "--resume")
    assert res.exit_code == 0, res.stderr
    assert_same_samples(samples(tmp_path / "r.json"), reference)
    assert not state.exists()


def test_ctrl_c_writes_a_partial_report_and_says_how_to_resume(tmp_path, run_cli, reference):
    done = _start_and_stop(tmp_path, signal.SIGINT)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "--resume" in done.stderr and "incomplete" in done.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["complete"] is False and rep["incomplete"]["reason"] == "interrupted"
    (unfinished,) = rep["incomplete"]["unfinished"]
    assert 0 < unfinished["completed"] < unfinished["attempted"]
    attack = rep["results"][0]["attacks"][0]
    assert attack["completed"] == unfinished["completed"]
    # the partial robust accuracy counts every sample not yet broken as robust: an upper bound, never lower
    full_robust = sum(reference["linf:0.05"]["robust"])
    assert sum(rep["results"][0]["samples"]["robust"]) >= full_robust
    res = run_cli("scan", *SLOW, "-o", tmp_path / "r.json", "--resume")
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True
    assert_same_samples(samples(tmp_path / "r.json"), reference)


def test_resume_refuses_a_different_scan_and_a_missing_state(tmp_path, run_cli):
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "5", "--attacks", "noise", "--eps", "0.3",
                  "-o", tmp_path / "r.json", "--resume")
    assert res.exit_code == 2 and "no state file" in res.stderr
    state = tmp_path / "r.json.state.npz"
    # a state left by another scan (a different seed): refused, naming what differs
    from robustbench_cli.evaluation.resume import ScanState

    st = ScanState(state, {"seed": 1, "threats": ["linf:0.3"]}, resume=False)
    assert state.exists()  # written at once: a stop before the first batch still leaves something to resume from
    st.put("x|y", {"robust": np.zeros(3, dtype=bool)}, force=True)
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "5", "--attacks", "noise", "--eps", "0.3",
                  "-o", tmp_path / "r.json", "--resume")
    assert res.exit_code == 2 and "different scan" in res.stderr and "seed" in res.stderr, res.stderr
    state.write_bytes(b"not an npz")
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "5", "--attacks", "noise", "--eps", "0.3",
                  "-o", tmp_path / "r.json", "--resume")
    assert res.exit_code == 2 and "cannot be read" in res.stderr


def test_time_budget_stops_new_work_and_reports_what_completed(tmp_path, run_cli):
    out = tmp_path / "r.json"
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "40", "--eps", "0.05", "--preset", "blackbox",
                  "--batch-size", "4", "--time-budget", "1s", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "time budget" in res.stderr and "--resume" in res.stderr
    rep = json.loads(out.read_text())
    assert rep["complete"] is False and rep["incomplete"]["reason"] == "time budget spent"
    attacks = {a["label"]: a for a in rep["results"][0]["attacks"]}
    assert rep["incomplete"]["unfinished"]
    for u in rep["incomplete"]["unfinished"]:
        a = attacks[u["attack"]]
        assert (a["completed"] or 0) == u["completed"] < u["attempted"] == a["attempted"] or a["skipped"].startswith("not run")
    # with a gate, a partial scan cannot pass: exit 2, reports still written
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "40", "--eps", "0.05", "--preset", "blackbox",
                  "--batch-size", "4", "--time-budget", "1s", "--fail-under", "0.1", "-o", tmp_path / "g.json")
    assert res.exit_code == 2 and "time budget" in res.stderr
    assert json.loads((tmp_path / "g.json").read_text())["complete"] is False


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "0", "-5m", "5x"])
def test_bad_durations(text):
    with pytest.raises(UserError):
        parse_duration(text)


def test_same_seed_same_results_whatever_the_batch_size(tmp_path, run_cli):
    """Per-sample random streams: the seed fixes every sample's result, and batching does not change it."""
    args = [ONNX, "--data", "mnist", "--n", "24", "--eps", "0.2", "--preset", "blackbox", "--queries", "300"]
    runs = []
    for name, bs in (("a", 5), ("b", 24), ("c", 5)):
        res = run_cli("scan", *args, "--batch-size", bs, "-o", tmp_path / f"{name}.json")
        assert res.exit_code == 0, res.stderr
        runs.append(samples(tmp_path / f"{name}.json"))
    assert_same_samples(runs[0], runs[2])  # same seed, same batch size: identical
    assert_same_samples(runs[0], runs[1])  # another batch size: identical per sample
    res = run_cli("scan", *args, "--batch-size", 5, "--seed", 1, "-o", tmp_path / "d.json")
    assert res.exit_code == 0
    other = samples(tmp_path / "d.json")
    assert other["linf:0.2"]["queries_at_break"] != runs[0]["linf:0.2"]["queries_at_break"]  # the seed matters
    assert 0 < sum(runs[0]["linf:0.2"]["robust"]) < 24  # breaks and survivors: the comparison means something


def test_a_ctrl_c_while_a_batch_is_recorded_waits_for_the_recording_then_stops():
    import os

    from robustbench_cli.evaluation import interrupts as B

    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        B.hold(True)
        os.kill(os.getpid(), signal.SIGINT)  # lands in the bookkeeping: noted, not raised
        time.sleep(0.01)
        assert B._STATE["pending"] is True
        assert B.release() is True  # letting go is the stop
        assert B._STATE == {"held": False, "pending": False}
        assert B.release() is False  # taken once
        with pytest.raises(KeyboardInterrupt):  # nothing held: Python's own behaviour
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        B._STATE.update(held=False, pending=False)
        signal.signal(signal.SIGINT, old)


def test_sigterm_stops_like_ctrl_c_and_never_replaces_a_complete_report(tmp_path, run_cli, reference):
    """timeout, docker stop and CI cancellation send SIGTERM: a partial report beside the complete one, state kept."""
    complete = tmp_path / "r.json"
    complete.write_text('{"complete": true, "sentinel": 1}')
    done = _start_and_stop(tmp_path, signal.SIGTERM)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "--resume" in done.stderr
    assert complete.read_text() == '{"complete": true, "sentinel": 1}'
    partial = json.loads((tmp_path / "r.partial.json").read_text())
    assert partial["complete"] is False and partial["incomplete"]["reason"] == "interrupted"
    res = run_cli("scan", *SLOW, "-o", complete, "--resume")
    assert res.exit_code == 0, res.stderr
    assert_same_samples(samples(complete), reference)


def test_an_edited_state_file_is_refused(tmp_path):
    from robustbench_cli.evaluation.resume import ScanState

    state = tmp_path / "s.npz"
    fp = {"seed": 0}
    st = ScanState(state, fp, resume=False)
    st.put("t|linf:0.3", {"robust": np.ones(5, dtype=bool), "queries": np.arange(5)}, force=True)
    assert ScanState(state, fp, resume=True).get("t|linf:0.3")["robust"].all()  # an untouched state loads
    with np.load(state, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["0/robust"] = np.zeros(5, dtype=bool)  # "every sample broken", written by hand
    np.savez(state, **arrays)
    with pytest.raises(UserError, match="fails its checksum"):
        ScanState(state, fp, resume=True)


def test_a_failed_write_leaves_every_report_as_it_was(tmp_path, monkeypatch):
    """Several -o files are written as one: a full disk on the second keeps the first file's old content."""
    import os

    from robustbench_cli.core import io

    first, second = tmp_path / "a.json", tmp_path / "b.md"
    first.write_text("old a")
    second.write_text("old b")
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    with pytest.raises(UserError, match=r"cannot write .*b\.md \(No space left on device\); no report was replaced"):
        io.atomic_write_all([(first, "new a"), (second, "new b")])
    assert first.read_text() == "old a" and second.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md"]  # no temporaries left


def test_a_second_scan_on_the_same_report_is_refused_while_the_first_runs(tmp_path, run_cli):
    """Two scans writing one -o at once would lose a report (and share a state file): the second is one line."""
    from robustbench_cli.core.io import output_lock

    out = tmp_path / "r.json"
    with output_lock(out):  # a scan in progress holds it
        res = run_cli("scan", ONNX, "--data", "mnist", "--n", "5", "--attacks", "noise", "--eps", "0.3", "-o", out)
    assert res.exit_code == 2 and "another robust scan" in res.stderr and str(out) in res.stderr
    assert not out.exists()
    res = run_cli("scan", ONNX, "--data", "mnist", "--n", "5", "--attacks", "noise", "--eps", "0.3", "-o", out)
    assert res.exit_code == 0 and out.exists()  # released: the next scan runs
    assert not (tmp_path / "r.json.lock").exists()


# --- a resumed state is evidence, verified again: never trusted -----------------------------------------------------
def _resumable(tmp_path: Path):
    from robustbench_cli import api
    from robustbench_cli.config import ScanConfig
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.evaluation.config import RunSpec
    from robustbench_cli.reports.writers import OutputSpec
    from robustbench_cli.targets import TargetSpec

    cfg = ScanConfig(targets=(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), fast_forward=False),),
                     data=DataSpec("mnist", n=30), run=RunSpec(threats=("linf:0.1",), attacks=("fgsm", "pgd")),
                     outputs=OutputSpec((str(tmp_path / "r.json"),)))
    first = api.run(cfg)  # the state stays until a caller removes it
    again = ScanConfig.from_dict({**cfg.to_dict(), "resume": True})
    return api, first, again


def _rewrite_state(path: Path, edit) -> None:
    """Edit a state's arrays and sign them again, as someone who knows the checksum's recipe could."""
    from robustbench_cli.evaluation import resume

    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        arrays = {k: z[k].copy() for k in z.files if k != "header"}
    edit(arrays)
    header["checksum"] = resume._checksum(header["fingerprint"], arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


def test_a_resumed_scan_verifies_every_restored_break_again(tmp_path):
    api, first, again = _resumable(tmp_path)
    broken = first.report.results[0].broken
    assert broken > 0
    resumed = api.run(again)
    assert resumed.report.provenance["resume"] == {"breaks_verified_again": broken}
    assert resumed.report.results[0].samples == first.report.results[0].samples  # per-sample columns unchanged


def test_a_state_claiming_breaks_it_cannot_show_is_refused(tmp_path):
    api, first, again = _resumable(tmp_path)
    state = tmp_path / "r.json.state.npz"
    robust = np.flatnonzero(np.array(first.report.results[0].samples.robust))
    assert len(robust)

    def mark_broken(a):  # a robust sample marked broken, with no candidate behind it
        a["0/robust"][robust[0]] = False
        a["0/adv_pred"][robust[0]] = 3

    _rewrite_state(state, mark_broken)
    with pytest.raises(UserError, match="without the candidate that broke them"):
        api.run(again)


def test_a_state_whose_candidate_does_not_break_the_model_is_refused(tmp_path):
    api, first, again = _resumable(tmp_path)
    state = tmp_path / "r.json.state.npz"
    samples = first.report.results[0].samples
    robust = int(np.flatnonzero(np.array(samples.robust))[0])
    broken = int(np.flatnonzero(~np.array(samples.robust) & np.array(samples.clean_correct()))[0])

    def borrow(a):  # a robust sample marked broken with another sample's candidate (a real adversarial example)
        a["0/robust"][robust] = False
        a["0/adv_pred"][robust] = a["0/adv_pred"][broken]
        a["0/cand_row"][robust] = a["0/cand_row"][broken]

    _rewrite_state(state, borrow)
    with pytest.raises(UserError, match="do not hold on the model"):
        api.run(again)
