"""Eval config validation, cache keys, retention maths and the HTML report."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.evaluation.config import GenerationSettings, SuiteSpec, load_eval_config, parse_config
from tunesmith.evaluation.forgetting import forgetting_report, retention_ratio
from tunesmith.evaluation.runner import ResultCache, suite_hash


def test_bundled_quickstart_config_is_valid():
    cfg = load_eval_config("configs/eval_quickstart.yaml")
    assert cfg.baseline == "base" and [s.kind for s in cfg.suites] == ["quickstart_json", "likelihood", "ifeval"]


def test_unknown_keys_duplicates_and_bad_baseline_are_rejected():
    with pytest.raises(TunesmithError, match=r"generation.max_tokens: unknown key — did you mean 'max_new_tokens'"):
        parse_config({"models": [{"name": "a"}], "suites": [{"name": "s", "kind": "ifeval"}], "generation": {"max_tokens": 5}})
    with pytest.raises(TunesmithError, match="model names must be unique; repeated: a"):
        parse_config({"models": [{"name": "a"}, {"name": "a"}], "suites": [{"name": "s", "kind": "ifeval"}]})
    with pytest.raises(TunesmithError, match="compare.baseline 'z'"):
        parse_config({"models": [{"name": "a"}], "suites": [{"name": "s", "kind": "ifeval"}], "compare": {"baseline": "z"}})
    with pytest.raises(TunesmithError, match="suites: List should have at least 1 item"):
        parse_config({"models": [{"name": "a"}], "suites": []})


def test_suite_hash_tracks_data_and_settings_but_not_labels(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "reference": "b"}\n')
    spec = SuiteSpec(name="x", kind="generation", data=str(data))
    g = GenerationSettings()
    base = suite_hash(spec, g)
    assert suite_hash(SuiteSpec(name="renamed", kind="generation", data=str(data), probe=True), g) == base
    assert suite_hash(spec, GenerationSettings(max_new_tokens=7)) != base
    data.write_text('{"prompt": "a", "reference": "c"}\n')
    assert suite_hash(spec, g) != base


def test_result_cache_roundtrip_and_damaged_entries(tmp_path):
    cache = ResultCache(tmp_path / "c")
    assert cache.get("m" * 20, "s" * 20) is None
    cache.put("m" * 20, "s" * 20, {"metrics": {"x": 1.0}})
    assert cache.get("m" * 20, "s" * 20) == {"metrics": {"x": 1.0}}
    cache.path("m" * 20, "s" * 20).write_text("{broken")
    assert cache.get("m" * 20, "s" * 20) is None
    assert ResultCache(tmp_path / "c", enabled=False).get("m" * 20, "s" * 20) is None


def test_retention_ratio_and_flags():
    assert retention_ratio(0.5, 0.4, True) == pytest.approx(0.8)
    assert retention_ratio(10.0, 12.5, False) == pytest.approx(0.8)  # perplexity went up: retention < 1
    assert retention_ratio(0.0, 0.0, True) == 1.0 and retention_ratio(0.0, 0.3, True) is None
    def res(ppl, acc):
        return {"metrics": {"perplexity": ppl, "prompt_strict": acc}, "directions": {"perplexity": False, "prompt_strict": True}}
    results = {"base": {"lm": res(10.0, 0.5), "if": res(1, 0.5)}, "tuned": {"lm": res(12.5, 0.5), "if": res(1, 0.48)}}
    rep = forgetting_report(results, {"lm": "likelihood", "if": "ifeval"}, ["lm", "if"], "base", 0.9)
    assert rep["models"]["tuned"]["lm"][0]["retention"] == pytest.approx(0.8) and rep["flagged"] == ["tuned/lm/perplexity"]
    assert rep["models"]["tuned"]["if"][0] == {"metric": "prompt_strict", "before": 0.5, "after": 0.48, "higher_is_better": True,
                                               "retention": pytest.approx(0.96), "flagged": False}


def test_report_html_is_self_contained_with_plots(tmp_path):
    from tunesmith.evaluation.compare import compare_models
    from tunesmith.evaluation.report import write_report

    def run(scores):
        return {"metrics": {"exact_match": sum(scores) / len(scores)}, "directions": {"exact_match": True},
                "items": [{"id": str(i), "category": "c" if i % 2 else "d", "output": f"o{s}", "reference": "r",
                           "scores": {"exact_match": float(s)}} for i, s in enumerate(scores)]}
    results = {"base": {"t": run([0] * 20)}, "tuned": {"t": run([1] * 15 + [0] * 5)}}
    comp = compare_models(results["base"], results["tuned"], {"t": "quickstart_json"}, "base", "tuned")
    assert comp["suites"]["t"]["metrics"]["exact_match"]["verdict"].startswith("tuned better, p=")
    report = {"models": {"base": {}, "tuned": {}}, "suites": {"t": {"kind": "quickstart_json", "data": "x", "generation": {"max_new_tokens": 8}}},
              "results": results, "comparisons": [comp], "forgetting": None, "errors": []}
    paths = write_report(report, tmp_path)
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 2 and "tuned better" in html
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere
    assert paths["json"].is_file()
