"""`tunesmith eval` end to end on the tiny model: base vs adapter, results.json + report.html, cache, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.e2e.test_cli_errors import run_cli
from tunesmith.cli.main import main


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter on the tiny model with non-zero B, so the adapted model really differs from the base."""
    from tunesmith.config.schema import LoraConfig, MethodConfig, ModelConfig
    from tunesmith.models.adapters import apply_method, save_adapter
    from tunesmith.models.load import load_model

    model = apply_method(load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="fp32")),
                         MethodConfig(kind="lora", lora=LoraConfig(r=4, alpha=8)))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.fixture(scope="module")
def task_eval(tmp_path_factory) -> Path:
    from tunesmith.tasks.json_extract import write_quickstart

    return write_quickstart(tmp_path_factory.mktemp("qs"), n_train=4, n_eval=8, seed=0)["eval"]


def _args(model_dir, adapter, task, out) -> list[str]:
    return ["eval", "--model", str(model_dir), "--adapter", str(adapter), "--suite", "ifeval", "--suite", "likelihood",
            "--suite", f"quickstart_json={task}", "--limit", "8", "--max-new-tokens", "12", "--dtype", "fp32", "--out", str(out), "--quiet"]


def test_eval_compares_base_and_adapter_and_reuses_the_cache(tmp_path, tiny_model_dir, tiny_adapter, task_eval, capsys):
    out = tmp_path / "eval"
    main(_args(tiny_model_dir, tiny_adapter, task_eval, out))
    report = json.loads((out / "results.json").read_text())
    assert list(report["models"]) == ["base", tiny_adapter.parent.name]  # adapter labelled by its run folder
    cand = [m for m in report["models"] if m != "base"][0]
    base_ppl = report["results"]["base"]["likelihood"]["metrics"]["perplexity"]
    cand_ppl = report["results"][cand]["likelihood"]["metrics"]["perplexity"]
    assert base_ppl != pytest.approx(cand_ppl)  # the adapter changes the model
    assert report["results"]["base"]["ifeval"]["settings"]["max_new_tokens"] == 12  # generation settings recorded
    assert report["results"]["base"]["likelihood"]["settings"] is None
    comp = report["comparisons"][0]
    assert (comp["a"], comp["b"]) == ("base", cand)
    nll = comp["suites"]["likelihood"]["metrics"]["nll"]
    assert nll["test"] == "wilcoxon" and nll["n"] == 8 and "verdict" in nll and 0 <= nll["p_holm"] <= 1
    assert comp["suites"]["quickstart_json"]["metrics"]["exact_match"]["test"] == "mcnemar_exact"
    assert "per_category" in comp["suites"]["quickstart_json"]["breakdown"]
    forgetting = report["forgetting"]
    assert forgetting["probes"] == ["ifeval", "likelihood"]  # the bundled sets are the default probes
    ppl_row = next(r for r in forgetting["models"][cand]["likelihood"] if r["metric"] == "perplexity")
    assert ppl_row["retention"] == pytest.approx(base_ppl / cand_ppl)
    assert ppl_row["flagged"] == (ppl_row["retention"] < 0.95)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "A/B: " in html and "Forgetting" in html
    assert all(not r["cached"] for per in report["results"].values() for r in per.values())
    capsys.readouterr()

    main(_args(tiny_model_dir, tiny_adapter, task_eval, out))  # rerun: everything from the cache
    again = json.loads((out / "results.json").read_text())
    assert all(r["cached"] for per in again["results"].values() for r in per.values())
    assert again["results"][cand]["likelihood"]["metrics"] == report["results"][cand]["likelihood"]["metrics"]
    assert len(list((out / "cache").glob("*.json"))) == 6


def test_config_file_runs_generation_and_multiple_choice_and_keeps_partial_results(tmp_path, tiny_model_dir, tiny_adapter):
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"prompt": q, "reference": a, "category": c}) + "\n"
                           for q, a, c in [("Say hi", "hi", "greet"), ("Say bye", "bye", "greet"), ("2+2?", "4", "math")]))
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "What is ice?", "choices": ["Frozen water.", "Hot air."], "answer": 0}) + "\n")
    cfg = {"models": [{"name": "a", "model": str(tiny_model_dir), "dtype": "fp32"},
                      {"name": "b", "model": str(tiny_model_dir), "adapter": str(tiny_adapter), "dtype": "fp32"}],
           "suites": [{"name": "gen", "kind": "generation", "data": str(gen)}],
           "generation": {"max_new_tokens": 6}, "output_dir": str(tmp_path / "out")}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["eval", str(path), "--quiet"])
    cfg["suites"].append({"name": "mc", "kind": "multiple_choice", "data": str(mc)})
    path.write_text(yaml.safe_dump(cfg))
    main(["eval", str(path), "--quiet"])
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["results"]["a"]["gen"]["cached"] and not report["results"]["a"]["mc"]["cached"]
    metrics = report["results"]["a"]["gen"]["metrics"]
    assert {"exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "corpus_bleu", "corpus_chrf"} <= set(metrics)
    assert set(report["comparisons"][0]["suites"]["gen"]["breakdown"]["per_category"]) == {"greet", "math"}
    assert report["forgetting"] is None


def test_bad_input_gives_a_clear_message_and_exit_2(tmp_path, tiny_model_dir, capsys):
    code, text = run_cli(["eval", "--model", str(tiny_model_dir), "--suite", "perplexity"], capsys)
    assert code == 2 and "unknown suite 'perplexity'" in text and "likelihood" in text
    noref = tmp_path / "noref.jsonl"
    noref.write_text(json.dumps({"prompt": "a", "reference": "b"}) + "\n" + json.dumps({"prompt": "no answer"}) + "\n")
    code, text = run_cli(["eval", "--model", str(tiny_model_dir), "--suite", f"generation={noref}", "--dtype", "fp32",
                          "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "noref.jsonl:2" in text and "'reference'" in text and "Traceback" not in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "a", "model": str(tiny_model_dir)}],
                                   "suites": [{"name": "s", "kind": "ifeval", "limt": 3}]}))
    code, text = run_cli(["eval", str(bad)], capsys)
    assert code == 2 and "suites.0.limt: unknown key" in text and "did you mean 'limit'" in text
    bad.write_text(yaml.safe_dump({"models": [{"name": "a"}], "suites": [{"name": "s", "kind": "bleu"}]}))
    code, text = run_cli(["eval", str(bad)], capsys)
    assert code == 2 and "unknown suite kind 'bleu'" in text


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: .ci/run installs it with apt-get when it runs as root or with password-less sudo (else: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    from tunesmith.evaluation.report import write_report

    results = {"a": {"s": {"metrics": {"perplexity": 3.0}, "directions": {}, "items": []}},
               "b": {"s": {"metrics": {"perplexity": 2.0}, "directions": {}, "items": []}}}
    report = {"models": {"a": {}, "b": {}}, "suites": {"s": {"kind": "likelihood", "data": "x"}}, "results": results,
              "comparisons": [], "forgetting": None, "errors": []}
    html = write_report(report, tmp_path)["html"]
    js = "document.title = [...document.images].every(i => i.complete && i.naturalWidth > 0) ? 'plots-ok:' + document.images.length : 'broken'"
    page = html.read_text().replace("</body>", f"<script>window.onload = () => {{ {js} }}</script></body>")
    html.write_text(page)
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert "<title>plots-ok:1</title>" in done.stdout
