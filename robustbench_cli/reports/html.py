"""The HTML report: one self-contained file (inline CSS, images as base64 PNG, no script, nothing fetched).

It reads as a review artefact, most important first: a verdict box (the gate's decision when the scan had one, the
robust accuracy of every model and threat with its 95% interval, the worst finding), then the findings ranked by
severity (failed gate checks and failed sanity checks stand out; skipped attacks are plain notes), then the models'
identities and the details: the gate's table, the summary, the side-by-side comparison and paired view when the
report has several targets, robust accuracy against epsilon (only where a curve carries information: several
epsilons, or minimum-norm distances), success against queries for the query attacks, and a grid of adversarial
examples. Tables wrap their text and scroll inside their own box, so the page fits a phone's width. Every plotted
point is also listed in a table under its figure, and every example image carries data attributes naming what it
shows (target, threat, sample id, role), so the picture and the numbers can be checked against each other.

The examples are not in the JSON report (they would make it grow with the image size); ``robust scan`` keeps a
handful per target and threat in memory and passes them here. An HTML report written from a JSON file alone
says that its examples are missing.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from robustbench_cli.reports import catalog, safe
from robustbench_cli.reports import compare as C
from robustbench_cli.reports import verdict as V
from robustbench_cli.reports.describe import identity, target_of, threat_words
from robustbench_cli.reports.images import perturbation_u8, png_bytes
from robustbench_cli.reports.model import Report, Result, TargetInfo, Verdict
from robustbench_cli.reports.stats import pct_text, wilson

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1b1b1b;padding:0 1rem;overflow-wrap:anywhere}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1.05rem}
.scroll{overflow-x:auto;max-width:100%;margin:.5rem 0 1rem}
table{border-collapse:collapse;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#f4f4f4}
td.l,th.l{text-align:left;white-space:normal;min-width:6rem}.dim{color:#666;font-size:.85rem}
.pass{color:#137333}.fail{color:#b3261e;font-weight:bold}.na{color:#a15c00}
.verdict{font-size:1.1rem;font-weight:bold;margin:1rem 0}
.vbox{border:2px solid #bbb;border-radius:8px;padding:.5rem 1rem;margin:1rem 0}
.vbox.v-pass{border-color:#137333;background:#f1f8f3}.vbox.v-fail{border-color:#b3261e;background:#fdf3f2}
.vbox.v-na{border-color:#a15c00;background:#fff8ec}.vbox .verdict{margin:.25rem 0 .5rem}
.ident{display:block;color:#555;font-size:.78rem;font-weight:normal}
.findings{list-style:none;padding:0;margin:.5rem 0 1rem}
.finding{border-left:6px solid #888;border-radius:4px;padding:.4rem .75rem;margin:.4rem 0}
.sev-error{border-color:#b3261e;background:#fdecea}.sev-warning{border-color:#b86e00;background:#fff4e0}
.sev-note{border-color:#1a5fb4;background:#eef4fb}
.badge{display:inline-block;padding:0 .4rem;border-radius:3px;font-size:.72rem;font-weight:bold;letter-spacing:.04em;
text-transform:uppercase;color:#fff;background:#666;margin-right:.4rem}
.sev-error .badge,.badge.sev-error{background:#b3261e}.sev-warning .badge,.badge.sev-warning{background:#b86e00}
.sev-note .badge,.badge.sev-note{background:#1a5fb4}
.finding .help{font-size:.85rem;color:#333;margin-top:.2rem}
.notes{color:#555;font-size:.85rem;padding-left:1.2rem}.notes li{list-style:circle}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(360px,100%),1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem}.card figure{display:inline-block;margin:0 .25rem;text-align:center}
.card img{width:88px;height:auto;image-rendering:pixelated;border:1px solid #ccc}
.card figcaption{font-size:.75rem;color:#444}.plot img{max-width:100%;height:auto}
details{margin:.25rem 0 1rem}code{background:#f4f4f4;padding:0 .2rem}
dl.models{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.9rem}
dl.models dt{font-weight:bold;color:#333}dl.models dd{margin:0}
@media (max-width:600px){body{margin:1rem auto;padding:0 .6rem}dl.models{grid-template-columns:1fr}dl.models dd{margin-bottom:.4rem}}
"""


def _e(x) -> str:
    return safe.html(x)


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, **data) -> str:
    attrs = " ".join(f'data-{k.replace("_", "-")}="{_e(v)}"' for k, v in data.items())
    return f'<img src="{_b64(png)}" alt="{_e(alt)}" {attrs}>'


def _table(header: list[str], rows: list[list], left: int = 1, cls: str = "") -> str:
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="{"l" if i < left else ""}">{c if isinstance(c, _Raw) else _e(c)}</td>' for i, c in enumerate(row)
        ) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class _Raw(str):
    """Cell content that is already HTML."""


# --- plots ------------------------------------------------------------------------------------------------------------
def _figure(width=6.4, height=3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def eps_curves(report: Report, names: dict[str, str]) -> list[dict]:
    """Robust accuracy against epsilon, per norm and goal: the points of each target (clean accuracy at 0), and the
    curve of minimum-norm distances where a minimum-norm attack ran (``robust_accuracy_by_epsilon``)."""
    groups: dict[tuple, dict] = {}
    for r in report.results:
        key = (r.norm, bool(r.targeted))
        g = groups.setdefault(key, {"norm": r.norm, "targeted": key[1], "series": {}})
        s = g["series"].setdefault(r.target, {"label": names.get(r.target, r.target), "points": [], "min_norm": None})
        if not s["points"]:
            s["points"].append({"epsilon": 0.0, "threat": "clean", "value": r.clean_accuracy, "n": r.n})
        s["points"].append({"epsilon": float(r.epsilon), "threat": r.threat, "value": r.robust_accuracy, "n": r.n})
        by_eps = r.robust_accuracy_by_epsilon or {}
        if by_eps.get("minimum_norm_attacks") and by_eps.get("epsilon"):
            s["min_norm"] = {"threat": r.threat, "attacks": list(by_eps["minimum_norm_attacks"]),
                             "epsilon": list(by_eps["epsilon"]), "value": list(by_eps["robust_accuracy"])}
    for g in groups.values():
        for s in g["series"].values():
            s["points"].sort(key=lambda p: p["epsilon"])
        epsilons = {p["epsilon"] for s in g["series"].values() for p in s["points"] if p["threat"] != "clean"}
        g["informative"] = len(epsilons) > 1 or any(s["min_norm"] for s in g["series"].values())
    return list(groups.values())


def _plot_eps(g: dict) -> bytes:
    fig = _figure()
    ax = fig.subplots()
    for s in g["series"].values():
        xs = [p["epsilon"] for p in s["points"]]
        ys = [100 * p["value"] for p in s["points"]]
        line = ax.plot(xs, ys, marker="o", label=s["label"])[0]
        if s["min_norm"]:
            m = s["min_norm"]
            ax.plot(m["epsilon"], [100 * v for v in m["value"]], linestyle="--", color=line.get_color(),
                    label=f"{s['label']}: minimum-norm distances ({', '.join(m['attacks'])})")
    ax.set_xlabel(f"epsilon ({g['norm']})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"robust accuracy vs epsilon, {g['norm']}{' targeted' if g['targeted'] else ''}")
    ax.legend(fontsize=8)
    return _png(fig)


def query_curves(report: Report, names: dict[str, str]) -> list[dict]:
    """Success against queries for threats where a query attack ran: the battery's curve and each query attack's."""
    out = []
    for r in report.results:
        query_attacks = [a for a in r.attacks if a.family == "query" and a.ran and a.success_curve]
        if not query_attacks:
            continue
        series: list[dict[str, Any]] = [{"label": "whole battery", "curve": r.success_curve}]
        series += [{"label": a.label, "curve": a.success_curve} for a in query_attacks]
        out.append({"target": r.target, "label": names.get(r.target, r.target), "threat": r.threat,
                    "grid": r.query_grid, "series": series})
    return out


def _plot_queries(c: dict) -> bytes:
    fig = _figure()
    ax = fig.subplots()
    for s in c["series"]:
        pts = [(q, 100 * v) for q, v in zip(c["grid"], s["curve"]) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=s["label"],
                    linewidth=2.2 if s["label"] == "whole battery" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("queries per sample (verification included)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"success vs queries, {c['label']} at {c['threat']}")
    ax.legend(fontsize=8)
    return _png(fig)


# --- sections ---------------------------------------------------------------------------------------------------------
def _ident_text(target: TargetInfo | None) -> str:
    """What identifies a model in a line: checkpoint file, short sha256, kind, access."""
    if target is None:
        return ""
    ident = identity(target)
    bits = []
    if ident.file and ident.file != target.name:
        bits.append(f"file {ident.file}")
    bits += [f"sha256 {ident.sha_short}", ident.kind, ident.box]
    return " · ".join(bits)


def _model_cell(label: str, target: TargetInfo | None) -> _Raw:
    """A model named in a table: its label, and under it what identifies it (file, sha256, kind, access)."""
    if target is None:
        return _Raw(_e(label))
    return _Raw(f'{_e(label)}<span class="ident">{_e(_ident_text(target))}</span>')


def _ci_text(r: Result) -> str:
    ci = wilson(r.samples.robust_count(), r.n)
    return "–" if ci is None else f"{pct_text(ci[0])}–{pct_text(ci[1])}"


def findings(report: Report, names: dict[str, str]) -> list[dict[str, Any]]:
    """Every failed finding, gravest first: failed (or unjudged) gate checks, then failed sanity checks by severity."""
    out: list[dict[str, Any]] = []
    if report.gate is not None:
        for c in report.gate.checks:
            if c.status == "pass":
                continue
            info = catalog.gate_rule(c.kind, c.metric)
            title = (f"gate could not judge {c.rule}" if c.status == "n/a" else f"gate check failed: {c.rule}")
            out.append({"severity": "error", "rule": info.id, "title": title, "target": c.target,
                        "ident": _ident_text(target_of(report, c.target)), "threat": c.threat,
                        "message": c.message, "help": info.help})
    for r in report.results:
        for d in r.failed_checks():
            info = catalog.check_rule(d.check)
            out.append({"severity": info.severity, "rule": info.id, "title": f"{d.check}: {info.title}",
                        "target": names.get(r.target, r.target), "ident": _ident_text(report.target(r.target)),
                        "threat": r.threat, "message": d.message, "help": info.help})
    rank = {sev: i for i, sev in enumerate(catalog.SEVERITIES)}
    return sorted(out, key=lambda f: (rank.get(f["severity"], len(rank)), not f["rule"].startswith("gate/")))


def _finding_html(f: dict[str, Any]) -> str:
    sev = _e(f["severity"])
    return (f'<li class="finding sev-{sev}" data-severity="{sev}" data-rule="{_e(f["rule"])}">'
            f'<span class="badge">{_e(f["severity"])}</span><b>{_e(f["title"])}</b> '
            f'<span class="dim">on {_e(f["target"])} at {_e(f["threat"])}</span>'
            f'<span class="ident">{_e(f["ident"])}</span>{_e(f["message"])}'
            f'<div class="help">What to do: {_e(f["help"])}</div></li>')


def notes(report: Report, names: dict[str, str]) -> list[str]:
    """What informs without being a failure: attacks skipped and why, examples re-checked after 8-bit rounding."""
    out = []
    skipped: dict[tuple[str, str], list[str]] = {}  # (target, reason) -> attack labels, one line each
    for r in report.results:
        for a in r.attacks:
            if a.skipped:
                labels = skipped.setdefault((names.get(r.target, r.target), a.skipped), [])
                if a.label not in labels:
                    labels.append(a.label)
    out += [f"skipped {', '.join(labels)} on {target}: {reason}" for (target, reason), labels in skipped.items()]
    for r in report.results:
        ec = r.examples_check
        if ec:
            out.append(f"{names.get(r.target, r.target)} at {r.threat}: {ec['checked']} example(s) re-checked "
                       f"after 8-bit rounding, {ec['still_adversarial']} still fool the model"
                       + (f" (saved in {ec['folder']})" if ec.get("folder") else ""))
    return list(dict.fromkeys(out))


def _verdict_box(report: Report, names: dict[str, str], found: list[dict[str, Any]]) -> str:
    """First thing on the page: the gate's decision, robust accuracy per model and threat, the worst finding."""
    gate = report.gate
    if gate is not None:
        vcls = {"passed": "pass", "failed": "fail", "could not judge": "na"}[gate.status]
        head = f'<p class="verdict {vcls}" id="verdict">{_e(gate.line)}</p>'
    else:
        vcls = "none"
        head = ('<p class="verdict" id="verdict">No gate: this scan was not judged against rules '
                "(--fail-under, --max-drop).</p>")
    rows = []
    for r in report.results:
        target = report.target(r.target)
        cert = "–" if r.certified_accuracy is None else pct_text(r.certified_accuracy)
        rows.append([_model_cell(names.get(r.target, r.target), target), threat_words(r, target),
                     _Raw(f"<b>{_e(pct_text(r.robust_accuracy))}</b>"), _ci_text(r), pct_text(r.clean_accuracy),
                     cert])
    table = _table(["model", "threat model", "robust", "95% CI", "clean", "certified"], rows, left=2)
    if found:
        worst = found[0]
        more = f" ({len(found) - 1} more below)" if len(found) > 1 else ""
        tail = (f'<p class="worst" data-severity="{_e(worst["severity"])}">Worst finding: '
                f'<span class="badge sev-{_e(worst["severity"])}">{_e(worst["severity"])}</span>'
                f'<b>{_e(worst["title"])}</b> on {_e(worst["target"])} at {_e(worst["threat"])}{_e(more)}</p>')
    else:
        tail = '<p class="worst pass" data-severity="none">No check failed.</p>'
    return (f'<section class="vbox v-{vcls}" id="verdict-box">{head}{table}{tail}'
            '<p class="dim">robust: accuracy under the whole battery, an upper bound (every success was re-checked on '
            "the model) · 95% CI: Wilson interval for n · certified: proved robust, a lower bound</p></section>")


def _findings_section(found: list[dict[str, Any]], notes_: list[str]) -> str:
    out = ["<h2>Findings</h2>"]
    if found:
        out.append('<ol class="findings">' + "".join(_finding_html(f) for f in found) + "</ol>")
    else:
        out.append('<p class="pass">Every sanity check passed' + ("" if not notes_ else "; notes below") + ".</p>")
    if notes_:
        out.append('<h3>Notes</h3><ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes_) + "</ul>")
    return "".join(out)


def _models(report: Report, names: dict[str, str]) -> str:
    out = ["<h2>Models</h2>"]
    for t in report.targets:
        ident = identity(t)
        items = [("spec", ident.spec)]
        if ident.file and ident.file != ident.spec:
            items.append(("checkpoint", ident.file))
        items += [("sha256", t.sha256 or "–"), ("kind", f"{ident.kind}, {ident.box}")]
        if t.input_shape:
            items.append(("input", "×".join(map(str, t.input_shape))
                          + (f", {t.num_classes} classes" if t.num_classes else "") + f", outputs {t.output_kind}"))
        out.append(f"<h3>{_e(names.get(t.name, t.name))}</h3><dl class=\"models\">"
                   + "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" if k in ("spec", "checkpoint", "sha256")
                             else f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>")
    return "".join(out)


def _summary(report: Report, names: dict[str, str]) -> str:
    labels = list(dict.fromkeys(a.label for r in report.results for a in r.attacks))
    header = ["target", "threat", "n", "clean", "robust", "95% CI", *[f"after {x}" for x in labels],
              "queries/sample", "median q to break", "time"]
    rows = []
    for r in report.results:
        cells = [_model_cell(names.get(r.target, r.target), report.target(r.target)), r.threat, r.n,
                 pct_text(r.clean_accuracy), _Raw(f"<b>{_e(pct_text(r.robust_accuracy))}</b>"), _ci_text(r)]
        for x in labels:
            a = r.attack(x)
            cells.append("–" if a is None else ("skipped" if a.skipped else pct_text(a.robust_accuracy_after)))
        q, qb = r.queries_mean, r.queries_median_success
        cells += ["–" if q is None else f"{q:,.0f}", "–" if qb is None else f"{qb:,.0f}", f"{r.seconds:.1f}s"]
        rows.append(cells)
    out = [_table(header, rows, left=2)]
    out.append('<p class="dim">clean: accuracy on unperturbed inputs · robust: accuracy under the whole battery, an upper '
               "bound (every success was re-checked on the target) · 95% CI: Wilson interval for n · after X: robust "
               "accuracy after attack X in the cascade · queries: model calls per sample, verification included</p>")
    return "".join(out)


def _gate(verdict: Verdict) -> str:
    cls = {"pass": "pass", "FAIL": "fail", "n/a": "na"}
    rows = []
    for row in V.rows(verdict):
        rows.append([_Raw(f'<span class="{cls[row[0]]}">{_e(row[0])}</span>'), *row[1:]])
    out = [_table(V.HEADER, rows, left=4)]
    for c in V.notable(verdict):
        shown = V.STATUS_TEXT[c.status]
        out.append(f'<p><span class="{cls[shown]}">{_e(shown)}</span> <b>{_e(c.rule)}</b>: {_e(c.message)}</p>')
    out.append(f'<p class="dim">{_e(V.LEGEND)}</p>')
    vcls = {"passed": "pass", "failed": "fail", "could not judge": "na"}[verdict.status]
    out.append(f'<p class="verdict {vcls}">{_e(verdict.line)}</p>')
    return "".join(out)


def _comparison(cmp: C.Comparison) -> str:
    labels = cmp.labels
    out = [f"<p>Reference column: <b>{_e(labels[0])}</b>.</p>"]
    out += [f"<p class=\"na\">warning: {_e(w)}</p>" for w in cmp.warnings]
    for th in cmp.threats:
        out.append(f"<h3>{_e(th.threat)} (n={th.n})</h3>")
        out.append(_table(["metric", *labels], [[row.metric, *[row.cell(j) for j in range(len(labels))]]
                                                for row in th.rows]))
        prow = [[p.b, *C.paired_cells(p)] for p in th.paired]
        out.append(_table([f"paired, against {labels[0]}", *C.PAIRED_HEADER], prow))
    out.append(f'<p class="dim">{_e(C.LEGEND)}</p>')
    return "".join(out)


def _curves(report: Report, names: dict[str, str]) -> str:
    out = ["<h2>Robust accuracy vs epsilon</h2>"]
    flat = []
    for g in eps_curves(report, names):
        title = f"{g['norm']}{' targeted' if g['targeted'] else ''}"
        if not g["informative"]:
            flat.append(title)
            continue
        alt = f"robust accuracy vs epsilon ({title})"
        img = _img(_plot_eps(g), alt, plot="robust-vs-epsilon", norm=g["norm"], targeted=str(g["targeted"]).lower())
        out.append(f'<div class="plot">{img}</div>')
        rows = [[s["label"], p["threat"], p["epsilon"], pct_text(p["value"]), p["n"]]
                for s in g["series"].values() for p in s["points"]]
        rows += [[f"{s['label']} (minimum-norm)", s["min_norm"]["threat"], e, pct_text(v), s["points"][-1]["n"]]
                 for s in g["series"].values() if s["min_norm"]
                 for e, v in zip(s["min_norm"]["epsilon"], s["min_norm"]["value"])]
        out.append("<details><summary>plotted points</summary>"
                   + _table(["target", "threat", "epsilon", "accuracy", "n"], rows, left=2) + "</details>")
    if flat:
        out.append(f'<p class="dim" data-no-curve="{_e(", ".join(flat))}">No curve for {_e(", ".join(flat))}: one '
                   "epsilon and no minimum-norm attack, so a plot would hold a single point (its robust accuracy is in "
                   "the tables above). Scan several epsilons (--threat linf:2/255 --threat linf:8/255) or add a "
                   "minimum-norm attack (--attacks fmn) for a curve.</p>")
    curves = query_curves(report, names)
    out.append("<h2>Success vs queries</h2>")
    if not curves:
        out.append('<p class="dim">No query (black-box) attack ran, so there is no queries-to-success curve.</p>')
    for c in curves:
        alt = f"success vs queries, {c['label']} at {c['threat']}"
        img = _img(_plot_queries(c), alt, plot="success-vs-queries", target=c["label"], threat=c["threat"])
        out.append(f'<div class="plot">{img}</div>')
        rows = [[s["label"], *["–" if v is None else pct_text(v) for v in s["curve"]]] for s in c["series"]]
        out.append("<details><summary>plotted points (success rate within q queries)</summary>"
                   + _table(["curve", *[f"q≤{q:,}" for q in c["grid"]]], rows) + "</details>")
    return "".join(out)


def _examples(report: Report, examples, names: dict[str, str]) -> str:

    if examples is None:
        return ('<p class="dim">No examples: they are embedded only when <code>robust scan</code> writes the HTML report '
                "(the JSON report does not store images).</p>")
    if not examples:
        return '<p class="dim">No sample was broken, so there is no adversarial example to show.</p>'
    out = ['<p class="dim">Images are exactly the 8-bit pixels shown to the model when it was asked again; the '
           'perturbation is amplified around mid-grey. A card marked <span class="fail">no longer fools</span> lost its '
           "effect when rounded to 8 bits (or left the threat model).</p>"]
    groups: dict[tuple, list] = {}
    for e in examples:
        groups.setdefault((e.target, e.threat), []).append(e)
    for (target, threat), exs in groups.items():
        label = names.get(target, target)
        out.append(f"<h3>{_e(label)} at {_e(threat)}</h3><div class=\"grid\">")
        for e in exs:
            pert, amp = perturbation_u8(e)
            meta = dict(target=label, threat=threat, sample_id=e.id)
            goal = f"goal {e.goal}" if e.targeted else f"label {e.label}"
            state = ("still fools" if e.still_adversarial else
                     ("no longer fools" if e.inside else "left the threat model"))
            scls = "pass" if e.still_adversarial else "fail"
            out.append(
                f'<div class="card" data-sample-id="{e.id}" data-still-fools="{str(e.still_adversarial).lower()}">'
                f'<figure>{_img(png_bytes(e.original), f"sample {e.id}, original", role="original", **meta)}'
                f'<figcaption>original: {_e(goal)}</figcaption></figure>'
                f'<figure>{_img(png_bytes(e.adversarial), f"sample {e.id}, adversarial", role="adversarial", prediction=e.saved_pred, **meta)}'
                f'<figcaption>adversarial: model says {e.saved_pred}</figcaption></figure>'
                f'<figure>{_img(png_bytes(pert), f"sample {e.id}, perturbation x{amp:.0f}", role="perturbation", amplification=f"{amp:.4g}", **meta)}'
                f'<figcaption>perturbation ×{amp:.0f}</figcaption></figure>'
                f'<div class="dim">sample {e.id} · {_e(goal)} · broken by {_e(e.attack)} · distance {e.saved_distance:.4g} '
                f'({_e(threat)}) · <span class="{scls}">{state}</span> after 8-bit rounding</div></div>'
            )
        out.append("</div>")
    return "".join(out)


def to_html(report: Report, examples=None) -> str:
    """The report as one self-contained HTML page. ``examples``: checked examples (None: not available)."""
    names = C.display_names(report)
    data, prov = report.data, report.provenance
    title = "robust report"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Data <code>{_e(data['name'])}</code> (n={data['n']}, sha256 <code>{_e(str(data['sha256'])[:12])}</code>), "
        f"battery <code>{_e(report.battery_id)}</code>, seed {_e(report.seed)}, "
        f"robust {_e(report.tool['version'])}, created {_e(report.created)}.</p>",
    ]
    found = findings(report, names)
    parts.append(_verdict_box(report, names, found))
    parts.append(_findings_section(found, notes(report, names)))
    parts.append(_models(report, names))
    if report.gate is not None:
        parts += ["<h2>Gate</h2>", _gate(report.gate)]
    parts += ["<h2>Summary</h2>", _summary(report, names)]
    if len(report.targets) > 1:
        parts += ["<h2>Comparison</h2>", _comparison(C.compare(report))]
    parts.append(_curves(report, names))
    parts += ["<h2>Adversarial examples</h2>", _examples(report, examples, names)]
    libs = prov.get("libraries", {})
    parts.append('<h2>Provenance</h2><p class="dim">'
                 + _e(", ".join(f"{k} {v}" for k, v in libs.items() if v)) + "<br>"
                 + _e(f"platform {prov.get('platform', '–')}, device {prov.get('device', '–')}") + "<br>"
                 + _e("command: robust " + " ".join(map(str, prov.get("command", [])))) + "</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
