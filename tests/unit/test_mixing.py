"""mix: temperature sampling P(i) ∝ n_i^α, explicit weights, category balance, determinism."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.cli.main import main
from tunesmith.data.mixing import balance, mix_files, mixing_probabilities, quotas
from tunesmith.errors import TunesmithError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sources(tmp_path):
    big = _write(tmp_path / "big.jsonl", [{"text": f"big {i}", "cat": "a" if i % 4 else "b"} for i in range(900)])
    small = _write(tmp_path / "small.jsonl", [{"text": f"small {i}", "cat": "c"} for i in range(100)])
    return big, small


def test_probabilities_follow_the_temperature():
    assert mixing_probabilities([900, 100], alpha=1.0) == pytest.approx([0.9, 0.1])
    assert mixing_probabilities([900, 100], alpha=0.5) == pytest.approx([30 / 40, 10 / 40])
    assert mixing_probabilities([900, 100], alpha=0.0) == pytest.approx([0.5, 0.5])
    assert mixing_probabilities([900, 100], weights=[1, 3]) == pytest.approx([0.25, 0.75])
    assert quotas([0.5, 0.25, 0.25], 7) == [3, 2, 2] and sum(quotas([1 / 3] * 3, 100)) == 100
    with pytest.raises(TunesmithError, match="one weight per source"):
        mixing_probabilities([1, 2], weights=[1.0])


def test_mix_is_deterministic_and_upsamples_small_sources(tmp_path, sources):
    r1 = mix_files(sources, tmp_path / "m1.jsonl", size=1000, alpha=0.5, seed=7)
    r2 = mix_files(sources, tmp_path / "m2.jsonl", size=1000, alpha=0.5, seed=7)
    assert (tmp_path / "m1.jsonl").read_bytes() == (tmp_path / "m2.jsonl").read_bytes()
    mix_files(sources, tmp_path / "m3.jsonl", size=1000, alpha=0.5, seed=8)
    assert (tmp_path / "m1.jsonl").read_bytes() != (tmp_path / "m3.jsonl").read_bytes()
    assert [s["taken"] for s in r1["sources"]] == [750, 250] and r1 == {**r2, "output": r1["output"]}
    rows = [json.loads(x) for x in (tmp_path / "m1.jsonl").read_text().splitlines()]
    small = [r["text"] for r in rows if r["text"].startswith("small")]
    assert len(small) == 250 and len(set(small)) == 100  # every small row at least twice, then 50 sampled
    assert r1["sources"][1]["repeated"] and json.loads((tmp_path / "m1.jsonl.manifest.json").read_text())["rows"] == 1000


def test_balance_down_and_up(tmp_path, sources):
    down = mix_files(sources, tmp_path / "d.jsonl", seed=0, balance_field="cat", balance_mode="down")
    assert down["rows"] == 300 and {k: v["after"] for k, v in down["balance"]["categories"].items()} == {"a": 100, "b": 100, "c": 100}
    up = mix_files(sources, tmp_path / "u.jsonl", seed=0, balance_field="cat", balance_mode="up")
    assert up["rows"] == 3 * 675
    rows, counts = balance([{"x": 1}, {"x": 1}, {}], "x", "down", random.Random(0))
    assert counts == {"1": {"before": 2, "after": 1}, "<missing>": {"before": 1, "after": 1}} and len(rows) == 2


def test_cli_mix(tmp_path, sources, capsys):
    main(["data", "mix", *map(str, sources), "-o", str(tmp_path / "m.jsonl"), "--weights", "1,1", "-n", "10", "--source-field", "src"])
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and sum(r["src"].endswith("small.jsonl") for r in rows) == 5
    with pytest.raises(SystemExit):
        main(["data", "mix", str(sources[0]), "-o", str(tmp_path / "m.jsonl"), "--weights", "x"])
    assert "--weights must be numbers" in capsys.readouterr().err
