"""results.json and a self-contained report.html (plots embedded as base64 PNG, no external assets)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from tunesmith.evaluation.forgetting import PRIMARY

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.good{color:#176317;font-weight:bold}.bad{color:#a31515;font-weight:bold}
pre{white-space:pre-wrap;background:#f7f7f7;padding:6px;max-height:12em;overflow:auto}img{max-width:100%}"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _png(fig) -> str:
    """<img> tag holding the figure as an embedded base64 PNG."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _headline_metrics(results: dict, suite: str, kind: str) -> list[str]:
    present = set()
    for per in results.values():
        present |= set(per.get(suite, {}).get("metrics", {}))
    return [m for m in PRIMARY.get(kind, []) if m in present]


def _bar_plot(results: dict, suite: str, metrics: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metrics) * len(models) / 2, 3))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        values = [results[model].get(suite, {}).get("metrics", {}).get(m, 0.0) for m in metrics]
        ax.bar([i + k * width for i in range(len(metrics))], values, width, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_title(suite)
    ax.legend()
    return _png(fig)


def _diff_plot(comparison: dict) -> str:
    """Forest plot: mean difference B - A with its bootstrap CI, one row per suite/metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{s}/{m}", r["bootstrap"]) for s, body in comparison["suites"].items() for m, r in body["metrics"].items()]
    if not rows:
        return ""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
    for y, (_, b) in enumerate(rows):
        ax.plot([b["ci_low"], b["ci_high"]], [y, y], color="tab:blue")
        ax.plot([b["mean_diff"]], [y], "o", color="tab:blue")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_title(f"{comparison['b']} - {comparison['a']} (95% bootstrap CI)")
    return _png(fig)


# Per-kind extra plots: which of a suite's metrics get their own bar chart (safety: attack success per template).
EXTRA_PLOTS = {"safety": lambda names: [m for m in names if m.startswith("asr/")]}


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c if isinstance(c, str) and c.startswith("<") else _fmt(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _suites_html(report: dict) -> str:
    parts = ["<h2>Scores</h2>"]
    results = report["results"]
    for suite, meta in report["suites"].items():
        metric_names = sorted({m for per in results.values() for m in per.get(suite, {}).get("metrics", {})})
        rows = [[m] + [results[model].get(suite, {}).get("metrics", {}).get(m, "—") for model in results] for m in metric_names]
        errs = [f"{model}: {results[model][suite]['error']}" for model in results if "error" in results[model].get(suite, {})]
        parts.append(f"<h3>{html.escape(suite)} <small>({meta['kind']}, data: {html.escape(str(meta['data']))})</small></h3>")
        if meta.get("generation"):
            parts.append(f"<p>generation: {html.escape(json.dumps(meta['generation']))}</p>")
        parts.append(_table(["metric", *results], rows))
        parts.extend(f'<p class="bad">error: {html.escape(e)}</p>' for e in errs)
        head = _headline_metrics(results, suite, meta["kind"])
        if head:
            parts.append(_bar_plot(results, suite, head))
        extra = EXTRA_PLOTS.get(meta["kind"], lambda _n: [])(metric_names)
        if extra:
            parts.append(_bar_plot(results, suite, extra))
    return "\n".join(parts)


def _comparison_html(comp: dict) -> str:
    parts = [f"<h2>A/B: {html.escape(comp['b'])} vs {html.escape(comp['a'])}</h2>",
             f"<p>Holm-corrected across all metrics below, alpha={comp['alpha']}.</p>"]
    rows = []
    for suite, body in comp["suites"].items():
        for metric, r in body["metrics"].items():
            cls = "good" if r["verdict"].startswith(comp["b"] + " ") else ("bad" if "better" in r["verdict"] else "")
            b = r["bootstrap"]
            rows.append([f"{suite}/{metric}", r["mean_a"], r["mean_b"], f"[{b['ci_low']:.3g}, {b['ci_high']:.3g}]",
                         r["test"], r["p_value"], r["p_holm"], f'<span class="{cls}">{html.escape(r["verdict"])}</span>'])
    parts.append(_table(["suite/metric", comp["a"], comp["b"], "95% CI of B-A", "test", "p", "p (Holm)", "verdict"], rows))
    parts.append(_diff_plot(comp))
    parts.append(_head_to_head_html(comp))
    for suite, body in comp["suites"].items():
        bd = body.get("breakdown")
        if not bd:
            continue
        parts.append(f"<h3>{html.escape(suite)}: {html.escape(bd['metric'])} by category</h3>")
        parts.append(_table(["category", "n", comp["a"], comp["b"]],
                            [[c, v["n"], v["mean_a"], v["mean_b"]] for c, v in bd["per_category"].items()]))
        for w in bd["worst_examples"]:
            parts.append(f"<p>worst: {html.escape(str(w['id']))} ({w['score_a']:.3g} → {w['score_b']:.3g})</p>"
                         f"<pre>{html.escape(comp['a'])}: {html.escape(str(w['output_a']))}\n{html.escape(comp['b'])}: "
                         f"{html.escape(str(w['output_b']))}\nreference: {html.escape(str(w['reference']))}</pre>")
    return "\n".join(parts)


def _head_to_head_html(comp: dict) -> str:
    """Judge suites where the judge compared the two models' answers directly (both orders)."""
    rows = []
    for suite, h in comp.get("head_to_head", {}).items():
        if "error" in h:
            rows.append([suite, "—", "—", "—", "—", "—", f'<span class="bad">{html.escape(h["error"])}</span>'])
            continue
        cls = "good" if h["verdict"].startswith(comp["b"] + " ") else ("bad" if "better" in h["verdict"] else "")
        rows.append([suite, h["win_rate"], f"[{h['win_rate_ci_low']:.3g}, {h['win_rate_ci_high']:.3g}]",
                     f"{h['wins']}/{h['ties']}/{h['losses']}", h["inconsistent"], h["p_value"],
                     f'<span class="{cls}">{html.escape(h["verdict"])}</span>'])
    if not rows:
        return ""
    return (f"<h3>Judge head-to-head: {html.escape(comp['b'])} vs {html.escape(comp['a'])}</h3>"
            "<p>Each item judged in both orders; a side wins only when preferred in both, otherwise a tie (1/2).</p>"
            + _table(["suite", f"win rate of {comp['b']}", "95% CI", "wins/ties/losses", "inconsistent", "p (sign)", "verdict"], rows))


def _forgetting_html(f: dict | None) -> str:
    if not f:
        return ""
    rows = []
    for model, probes in f["models"].items():
        for suite, metrics in probes.items():
            for r in metrics:
                flag = '<span class="bad">below threshold</span>' if r["flagged"] else "ok"
                rows.append([f"{model} / {suite}/{r['metric']}", r["before"], r["after"],
                             r["retention"] if r["retention"] is not None else "n/a", flag])
    return (f"<h2>Forgetting (retention vs {html.escape(f['baseline'])}, threshold {f['threshold']})</h2>"
            + _table(["model / probe", "before", "after", "retention", "flag"], rows))


def render_html(report: dict) -> str:
    """The whole report as one HTML string."""
    body = [f"<h1>tunesmith eval</h1><p>models: {html.escape(', '.join(report['models']))}</p>"]
    body.extend(f'<p class="bad">{html.escape(e)}</p>' for e in report.get("errors", []))
    body.append(_suites_html(report))
    body.extend(_comparison_html(c) for c in report["comparisons"])
    body.append(_forgetting_html(report.get("forgetting")))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith eval</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json and report.html into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
