"""Evidence people can look at: kept adversarials, 8-bit examples re-checked on the model, the HTML report,
the report schema, and the HTML rendered by a real headless browser."""

from __future__ import annotations

import base64
import csv
import html as htmlmod
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from report_factory import synthetic_report, tiny_cli_files

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.evaluation.examples import check_examples, quantise, select
from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules
from robustbench_cli.reports.html import to_html
from robustbench_cli.reports.images import image_array
from robustbench_cli.reports.model import Finding, report_schema
from robustbench_cli.targets.pytorch import TorchTarget


@pytest.fixture(autouse=True)
def _not_on_github(monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def _linear_problem(n=24):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 3)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (n, 1, 4, 4)) / 255).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), lin)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    return TorchTarget(model, "linear", num_classes=3), EvalSet(x=x, y=y, ids=np.arange(n) + 7, name="grid")


BATTERY = Battery("t", 1, [Entry("fgsm", "fgsm"), Entry("pgd", "pgd", {"steps": 5}), Entry("noise", "noise", {"draws": 3}, independent=True)])


def test_adversarials_are_kept_only_when_asked_and_are_the_verified_candidates():
    target, data = _linear_problem()
    threats = [ThreatModel.parse("linf:0.1"), ThreatModel.parse("l2:0.3")]
    plain = evaluate(target, data, threats, BATTERY)
    assert all(r.adversarial is None for r in plain.results)
    kept = evaluate(target, data, threats, BATTERY, keep_adversarials=True)
    for r, p in zip(kept.results, plain.results):
        assert (r.robust == p.robust).all() and r.broken_by == p.broken_by  # keeping changes nothing else
        broken = ~r.robust & r.clean_correct
        assert broken.any() and r.adversarial.dtype == np.float32 and r.adversarial.shape == data.x.shape
        assert np.isnan(r.adversarial[~broken]).all() and np.isfinite(r.adversarial[broken]).all()
        adv = torch.as_tensor(r.adversarial[broken])
        assert (target.predict(adv).numpy() == r.adv_pred[broken]).all()
        x0 = torch.as_tensor(data.x[broken])
        assert r.threat.contains(adv, x0).all()
        np.testing.assert_allclose(r.threat.distance(adv, x0).numpy(), r.distance[broken], rtol=1e-6)


def test_quantisation_stays_inside_the_ball_for_grid_inputs():
    threat = ThreatModel.parse("linf:0.3")  # 76.5/255: rounding the corner up would leave the ball
    x0 = np.full((1, 1, 2, 2), 100 / 255, np.float32)
    adv = x0 + np.float32(0.3)
    q, inside = quantise(adv, x0, threat)
    assert inside.all() and (q == 176).all()  # towards the clean input: 100 + 76
    l2 = ThreatModel.parse("l2:0.1")
    rng = np.random.default_rng(1)
    x0 = (rng.integers(0, 256, (50, 8)) / 255).astype(np.float32)
    d = rng.normal(size=(50, 8)).astype(np.float32)
    adv = np.clip(x0 + 0.1 * d / np.linalg.norm(d, axis=1, keepdims=True), 0, 1).astype(np.float32)
    q, inside = quantise(adv, x0, l2)
    assert inside.all()


def test_examples_are_rechecked_with_counted_model_calls():
    target, data = _linear_problem()
    res = evaluate(target, data, [ThreatModel.parse("linf:0.1")], BATTERY, keep_adversarials=True).results[0]
    pick = select(res, 4)
    assert 0 < len(pick) <= 4
    calls = []
    orig = target._scores_batch
    target._scores_batch = lambda x: (calls.append(len(x)), orig(x))[1]
    examples, queries = check_examples(target, data, res, pick)
    assert queries == len(pick) == sum(calls)  # one real model call per example
    for e in examples:
        pixels = torch.as_tensor(e.adversarial.astype(np.float32) / 255)[None]
        assert int(target.predict(pixels)[0]) == e.saved_pred
        assert e.still_adversarial == (e.inside and e.saved_pred != e.label)


def test_examples_are_chosen_across_attacks():
    from types import SimpleNamespace

    n = 12
    broken_by = ["fgsm"] * 6 + ["pgd"] * 3 + ["square"] * 2 + [None]
    res = SimpleNamespace(
        robust=np.array([b is None for b in broken_by]), clean_correct=np.ones(n, bool),
        adv_pred=np.array([-1 if b is None else 1 for b in broken_by]), broken_by=broken_by,
        attacks=[SimpleNamespace(label=x) for x in ("fgsm", "pgd", "square", "noise")])
    assert select(res, 3).tolist() == [0, 6, 9]  # one per attack, in battery order
    assert select(res, 5).tolist() == [0, 1, 6, 7, 9]
    assert len(select(res, 100)) == 11 and len(select(res, 0)) == 0


# --- the CLI: --save-examples, the HTML report, the schema ----------------------------------------------------------
@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """One scan of a tiny linear model seen as a score-only black box, so query attacks run too."""
    from typer.testing import CliRunner

    from robustbench_cli.cli import app

    d = tmp_path_factory.mktemp("evidence")
    files = tiny_cli_files(d, n=24)
    out = d / "out"
    args = ["scan", files["model"], "--weights", files["w0"], "--data", files["data"], "--eps", "0.06",
            "--threat", "l2:0.4", "--preset", "quick", "--access", "scores", "--html-examples", "3",
            "-o", str(out / "r.json"), "-o", str(out / "r.html"), "--save-examples", str(d / "ex")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stdout + result.stderr
    return {"dir": d, "files": files, "out": out, "ex": d / "ex", "stdout": result.stdout,
            "report": json.loads((out / "r.json").read_text()), "html": (out / "r.html").read_text()}


def _model():
    ns: dict = {}
    from report_factory import FACTORY

    exec(FACTORY, ns)  # noqa: S102
    return ns["build"]()


def test_saved_examples_show_what_the_index_says(scanned):
    rep, ex = scanned["report"], scanned["ex"]
    model = _model()
    model.load_state_dict(torch.load(scanned["files"]["w0"], weights_only=True))
    rows = list(csv.DictReader(open(ex / "index.csv", newline="")))
    per_threat = {r["threat"]: r for r in rep["results"]}
    for threat, r in per_threat.items():
        mine = [x for x in rows if x["threat"] == threat]
        assert len(mine) == r["broken"] == r["examples_check"]["checked"]
        assert sum(x["still_fools"] == "True" for x in mine) == r["examples_check"]["still_adversarial"]
        assert r["examples_check"]["recheck_queries"] == len(mine)  # counted: one query each
    samples = {r["threat"]: r["samples"] for r in rep["results"]}
    x_all = np.load(scanned["files"]["data"])["x"]
    for row in rows:
        img = np.asarray(Image.open(ex / row["file"]))
        orig = np.asarray(Image.open(ex / row["original"]))
        sid = int(row["id"])
        assert (orig == image_array(x_all[sid])).all()
        x = torch.as_tensor(img.astype(np.float32) / 255).reshape(1, 1, 8, 8)
        with torch.no_grad():
            pred = int(model(x).argmax(1)[0])
        assert pred == int(row["saved_pred"])  # the file shows what the index claims
        threat = ThreatModel.parse(row["threat"])
        x0 = torch.as_tensor(x_all[sid].astype(np.float32) / 255)[None]
        inside = bool(threat.contains(x, x0))
        assert inside == (row["inside_threat"] == "True")
        assert (row["still_fools"] == "True") == (inside and pred != int(row["label"]))
        s = samples[row["threat"]]
        k = s["id"].index(sid)
        assert s["robust"][k] is False and s["broken_by"][k] == row["attack"]
    assert "examples:" in scanned["stdout"] and "still fool the model" in scanned["stdout"]


def test_report_validates_against_the_schema(scanned):
    jsonschema = pytest.importorskip("jsonschema")
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(scanned["report"], schema)
    from robustbench_cli.gate.judge import judge
    from robustbench_cli.gate.rules import collect_rules

    report = synthetic_report(n=40)
    report.gate = judge(report, collect_rules(["0.3"], ["2pp"]), paired=True)
    rep = report.to_dict()
    jsonschema.validate(rep, schema)
    bad = json.loads(json.dumps(rep))
    bad["results"][0]["robust_accuracy"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _imgs(page: str) -> list[dict]:
    out = []
    for m in re.finditer(r"<img ([^>]*)>", page):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
        out.append({k: htmlmod.unescape(v) for k, v in attrs.items()})
    return out


def _png_pixels(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_html_is_self_contained_and_embeds_the_described_images(scanned):
    page, ex = scanned["html"], scanned["ex"]
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "url(" not in page
    imgs = _imgs(page)
    assert imgs and all(i["src"].startswith("data:image/png;base64,") for i in imgs)
    plots = [i for i in imgs if "data-plot" in i]
    assert not [i for i in plots if i["data-plot"] == "robust-vs-epsilon"]  # one epsilon per norm: no curve
    assert "No curve for linf, l2" in page
    assert {i["data-threat"] for i in plots if i["data-plot"] == "success-vs-queries"} == {"linf:0.06", "l2:0.4"}
    rows = {(r["threat"], r["id"]): r for r in csv.DictReader(open(ex / "index.csv", newline=""))}
    cards = [i for i in imgs if i.get("data-role") == "adversarial"]
    assert 0 < len(cards) <= 6  # 3 per threat at most: a handful, not all
    for i in cards:
        row = rows[(i["data-threat"], i["data-sample-id"])]
        # the HTML shows exactly the pixels of the saved file, and the model's answer on them
        assert (_png_pixels(i["src"]) == np.asarray(Image.open(ex / row["file"]))).all()
        assert i["data-prediction"] == row["saved_pred"]
    origs = [i for i in imgs if i.get("data-role") == "original"]
    perts = [i for i in imgs if i.get("data-role") == "perturbation"]
    assert len(origs) == len(perts) == len(cards)
    # the attacks of the cascade are spread over the examples shown (chosen across attacks)
    shown = {(i["data-threat"], i["data-sample-id"]) for i in cards}
    assert len({rows[k]["attack"] for k in shown}) >= min(2, len({r["attack"] for r in rows.values()}))


def test_html_from_json_alone_says_examples_are_missing(run_cli, scanned, tmp_path):
    from robustbench_cli.reports.model import Report

    page = to_html(Report.from_dict(scanned["report"]))
    assert "No examples" in page and "data-role" not in page


def test_save_examples_refuses_a_non_empty_folder_before_work(run_cli, scanned, tmp_path):
    f = scanned["files"]
    out = tmp_path / "r.json"
    out.write_text("old")
    r = run_cli("scan", f["model"], "--weights", f["w0"], "--data", f["data"], "--eps", "0.06", "--preset", "quick",
                "-o", out, "--save-examples", scanned["ex"])
    assert r.exit_code == 2 and "not empty" in r.stderr and out.read_text() == "old"


# --- a real browser ---------------------------------------------------------------------------------------------------
PROBE = """<script>
window.addEventListener('load', () => {
  const out = [];
  for (const img of document.images) {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    let px = null;
    if (img.dataset.role) {
      const d = ctx.getImageData(0, 0, c.width, c.height).data, a = [];
      for (let i = 0; i < d.length; i += 4) a.push(d[i], d[i + 1], d[i + 2]);
      px = a;
    }
    const r = img.getBoundingClientRect();
    out.push({role: img.dataset.role || null, plot: img.dataset.plot || null, id: img.dataset.sampleId || null,
              threat: img.dataset.threat || null, w: img.naturalWidth, h: img.naturalHeight,
              shown: r.width > 0 && r.height > 0, px: px});
  }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_a_headless_browser(scanned, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser (chromium) installed; .ci/run installs Debian's chromium")
    page = scanned["html"].replace("</body>", PROBE + "</body>")  # the probe lives in a copy, not in the report
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", "--dump-dom", probe_page.as_uri()]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{browser} did not run here ({e.__class__.__name__})")
    m = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert m, f"the browser produced no page (rc={run.returncode}): {run.stderr[-2000:]}"
    seen = json.loads(htmlmod.unescape(m.group(1)))
    imgs = _imgs(scanned["html"])
    assert len(seen) == len(imgs)
    for got, want in zip(seen, imgs):
        pixels = _png_pixels(want["src"])
        assert got["shown"] and (got["h"], got["w"]) == pixels.shape[:2]  # decoded and laid out
        if got["role"]:
            rgb = np.asarray(got["px"], dtype=np.uint8).reshape(got["h"], got["w"], 3)
            expect = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
            assert (rgb == expect).all(), f"{got['role']} of sample {got['id']}: the browser shows other pixels"
    assert any(g["plot"] == "success-vs-queries" for g in seen) and any(g["role"] == "adversarial" for g in seen)


# --- the page at a desktop's and a phone's width ----------------------------------------------------------------
WIDTH_PROBE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="page" style="width:%(width)dpx;height:2400px;border:0" srcdoc="%(srcdoc)s"></iframe>
<script>
// headless chromium lays a --dump-dom page out at 500px at least: the report is measured inside an iframe that is
// exactly as wide as the screen asked for (its own viewport, so media queries see that width too)
document.getElementById('page').addEventListener('load', (ev) => {
  const win = ev.target.contentWindow, doc = win.document, vw = win.innerWidth;
  const wide = [];
  for (const el of doc.body.querySelectorAll('*')) {
    if (el.closest('.scroll')) continue;  // a table scrolls inside its own box: that is how it fits
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1) wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                                    ' ' + Math.round(r.right));
  }
  const box = doc.getElementById('verdict-box');
  const pre = document.createElement('pre');
  pre.id = 'width-probe';
  pre.textContent = JSON.stringify({scrollWidth: doc.documentElement.scrollWidth, innerWidth: vw,
                                    wide: wide.slice(0, 10), verdictTop: box ? box.getBoundingClientRect().top : null});
  document.body.appendChild(pre);
});
</script></body></html>"""


def review_report():
    """A report that strains the layout: a long path without spaces, two models, a failed gate, failed checks."""
    long = "/home/ci/work/" + "a_directory_name_without_any_spaces_" * 3 + "model-a.onnx"
    rep = synthetic_report(targets=((long, 0.45), ("model-b.onnx", 0.40)), threats=("linf:8/255", "l2:0.5"))
    rep.results[0].diagnostics.append(Finding(check="noise-vs-attack", attack="pgd", passed=False,
                                              message="noise broke 3 samples pgd left robust"))
    rep.results[1].diagnostics.append(Finding(check="clean-accuracy", passed=False, message="at chance"))
    for r in rep.results:  # as a black box would have it: the gradient attacks did not run
        for a in r.attacks:
            if a.family == "gradient":
                a.skipped = "needs gradients; the target offers labels, scores"
    return replace(rep, gate=judge(rep, collect_rules(["robust_accuracy@linf:8/255=0.44"], ["2pp"]), paired=True))


def _chromium(browser: str, tmp_path: Path, width: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},2400", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{browser} did not run here ({e.__class__.__name__})")


@pytest.mark.parametrize("width", [1400, 390])
@pytest.mark.parametrize("which", ["scan", "review"])
def test_the_page_fits_the_screen_without_horizontal_scrolling(scanned, tmp_path, width, which):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser (chromium) installed; .ci/run installs Debian's chromium")
    page = scanned["html"] if which == "scan" else to_html(review_report())
    report = tmp_path / f"{which}.html"
    report.write_text(page, encoding="utf-8")
    probed = tmp_path / f"{which}-probe.html"
    probed.write_text(WIDTH_PROBE % {"width": width, "srcdoc": htmlmod.escape(page, quote=True)}, encoding="utf-8")
    run = _chromium(browser, tmp_path, width + 100, "--dump-dom", probed.as_uri())
    m = re.search(r'<pre id="width-probe">(.*?)</pre>', run.stdout, re.S)
    assert m, f"the browser produced no page (rc={run.returncode}): {run.stderr[-2000:]}"
    got = json.loads(htmlmod.unescape(m.group(1)))
    assert got["innerWidth"] == width, got  # the browser laid the page out at the width asked for
    assert got["scrollWidth"] <= got["innerWidth"], f"the page scrolls sideways at {width}px: {got}"
    assert not got["wide"], got
    assert got["verdictTop"] is not None and got["verdictTop"] < 400  # the verdict box comes first, near the top
    # a screenshot for people (a CI artefact when ROBUST_ARTIFACTS_DIR is set)
    folder = Path(os.environ.get("ROBUST_ARTIFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"report-{which}-{width}px.png"
    _chromium(browser, tmp_path, width, f"--screenshot={shot}", report.as_uri())
    assert shot.is_file() and Image.open(shot).size[0] == width


def test_the_review_page_leads_with_the_verdict_and_ranks_findings():
    rep = review_report()
    page = to_html(rep)
    order = [page.index(x) for x in ('id="verdict-box"', "<h2>Findings</h2>", "<h2>Models</h2>", "<h2>Gate</h2>",
                                     "<h2>Summary</h2>", "<h2>Comparison</h2>", "<h2>Adversarial examples</h2>")]
    assert order == sorted(order)
    box = page[page.index('id="verdict-box"'):page.index("</section>")]
    assert "gate FAILED" in box and "Worst finding" in box
    # robust accuracy per model and threat with its interval, the threat in words
    assert box.count("<tr>") == 1 + len(rep.results)
    assert "L∞ 8/255 (= 0.03137) on [0,1] pixels, untargeted, black box (scores), 200 images" in box
    assert "44.5%" in box and "37.8%–51.4%" in box
    # findings, gravest first: gate failures, then the error check, then the warning; each with what to do
    sev = re.findall(r'<li class="finding sev-(\w+)" data-severity="\w+" data-rule="([^"]+)"', page)
    assert [s for s, _ in sev] == sorted((s for s, _ in sev), key=["error", "warning", "note"].index)
    rules = [r for _, r in sev]
    assert rules[-2:] == ["check/clean-accuracy", "check/noise-vs-attack"] and rules[0].startswith("gate/")
    assert 'data-severity="error"' in box  # the worst finding, in the box
    # a skipped attack is a note, not a finding: it looks different
    notes = page[page.index('<ul class="notes">'):]
    assert "skipped" in notes[:notes.index("</ul>")] and "skipped" not in page[page.index('<ol class="findings">'):
                                                                                   page.index("</ol>")]
    # model identity: spec, sha256 (short in tables, whole under Models), kind and access
    assert "sha256 000000000000 · onnx · black box (scores)" in page and "01" * 32 in page
    # one epsilon per norm: no curve (a single point is no plot), and the page says why
    assert 'data-plot="robust-vs-epsilon"' not in page and "No curve for linf, l2" in page


def test_a_curve_is_drawn_when_several_epsilons_were_scanned():
    rep = synthetic_report(threats=("linf:2/255", "linf:8/255", "l2:0.5"))
    page = to_html(rep)
    imgs = _imgs(page)
    assert {i["data-norm"] for i in imgs if i.get("data-plot") == "robust-vs-epsilon"} == {"linf"}
    assert "No curve for l2" in page
