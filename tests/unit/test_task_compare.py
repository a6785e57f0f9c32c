"""`task compare`: two `task score` results compared per request (a request's samples are one paired unit)."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli.main import main
from tunesmith.cli.task import paired_outcomes


def _scores(kinds: list[str], samples: int, data: str = "eval.jsonl") -> dict:
    return {"answer_kinds": kinds, "decoding": {"temperature": 1.0, "samples_per_row": samples}, "data": data}


def test_outcomes_group_each_requests_samples():
    # 3 requests x 2 samples; sample k of request i sits at i + k * 3
    scores = _scores(["exact", "time_shift", "preamble", "exact_other_spacing", "no_json", "exact"], samples=2)
    out = paired_outcomes(scores)
    assert out == {"right": [1.0, 0.0, 0.5], "verbose": [0.0, 0.0, 0.5], "unparsable": [0.0, 0.5, 0.0]}
    with pytest.raises(Exception, match="no per-answer kinds"):
        paired_outcomes({"decoding": {"samples_per_row": 2}})


def test_compare_reports_a_significant_gain_and_refuses_other_requests(tmp_path, capsys):
    n = 40
    before = ["time_shift"] * 30 + ["exact"] * 10 + ["exact"] * 40         # 2 samples each: 30 requests half right
    after = ["exact"] * 40 + ["exact"] * 38 + ["truncated"] * 2
    paths = [tmp_path / "before.json", tmp_path / "after.json"]
    for path, kinds in zip(paths, (before, after)):
        path.write_text(json.dumps(_scores(kinds, samples=2)))
    out = tmp_path / "cmp.json"
    main(["task", "compare", str(paths[0]), str(paths[1]), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["right"]["n"] == n and result["right"]["mean_a"] == pytest.approx(50 / 80)
    assert result["right"]["mean_b"] == pytest.approx(78 / 80)
    assert result["right"]["verdict"].startswith("after better") and result["right"]["p_holm"] < 0.001
    assert result["unparsable"]["verdict"].startswith("no significant difference")
    assert "paired requests" in capsys.readouterr().out
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_scores(after, samples=2, data="other.jsonl")))
    with pytest.raises(SystemExit) as refused:
        main(["task", "compare", str(paths[0]), str(other)])
    assert refused.value.code == 2
