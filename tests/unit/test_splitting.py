"""split: fractions, near-duplicates never straddle splits, 13-gram decontamination."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.cli.main import main
from tunesmith.data.splitting import split_file
from tunesmith.errors import TunesmithError


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def data(tmp_path):
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    rows = []
    for i in range(200):
        words = [rng.choice(vocab) for _ in range(40)]
        rows.append({"instruction": f"task {i}", "output": " ".join(words)})
        if i % 10 == 0:  # a near copy: last word changed
            rows.append({"instruction": f"task {i} again", "output": " ".join(words[:-1] + ["changed"])})
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_fractions_and_grouping(tmp_path, data):
    path, rows = data
    report = split_file(path, tmp_path / "s", {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    sizes = report["rows"]
    assert sum(sizes.values()) == 220 and 170 <= sizes["train"] <= 182 and 18 <= sizes["val"] <= 26
    assert report["grouping"]["groups_with_near_duplicates"] == 20
    where = {}
    for name in ("train", "val", "test"):
        for r in _rows(tmp_path / "s" / f"{name}.jsonl"):
            key = " ".join(r["output"].split()[:5])
            where[key] = where.get(key, set()) | {name}
    assert all(len(s) == 1 for s in where.values())  # a row and its near copy share a split
    again = split_file(path, tmp_path / "s2", {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert again["rows"] == sizes and (tmp_path / "s" / "val.jsonl").read_text() == (tmp_path / "s2" / "val.jsonl").read_text()


def test_decontamination_by_13_grams(tmp_path, data):
    path, rows = data
    eval_file = tmp_path / "eval.jsonl"
    leaked = rows[5]["output"].split()[10:25]  # 15 words of a training answer inside an eval question
    eval_file.write_text(json.dumps({"prompt": "Q: " + " ".join(leaked) + "?", "completion": "A"}) + "\n"
                         + json.dumps({"prompt": "unrelated words that appear nowhere in training at all", "completion": "B"}) + "\n")
    report = split_file(path, tmp_path / "s", seed=0, eval_files=[eval_file])
    assert report["decontamination"]["removed"] == 1 and sum(report["rows"].values()) == 219
    bad = _rows(tmp_path / "s" / "contaminated.jsonl")
    assert bad[0]["row"] == rows[5] and "13-gram" in bad[0]["reason"]
    short = tmp_path / "short.jsonl"  # a 9-word eval text contained whole in a training row
    short.write_text(json.dumps({"text": " ".join(rows[7]["output"].split()[3:12])}) + "\n")
    assert split_file(path, tmp_path / "s3", eval_files=[short])["decontamination"]["removed"] == 1


def test_bad_fractions_and_cli(tmp_path, data, capsys):
    with pytest.raises(TunesmithError, match="sum to 1"):
        split_file(data[0], tmp_path / "s", {"train": 0.5, "val": 0.1})
    main(["data", "split", str(data[0]), "-o", str(tmp_path / "c"), "--fractions", "0.5,0.5,0", "--no-group"])
    assert _rows(tmp_path / "c" / "test.jsonl") == [] and len(_rows(tmp_path / "c" / "train.jsonl")) == 110
    assert json.loads((tmp_path / "c" / "split_report.json").read_text())["grouping"]["on"] is False
