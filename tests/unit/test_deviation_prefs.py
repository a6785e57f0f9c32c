"""Likeliest-deviation pairs: the policy's most probable wrong next token, read by teacher forcing the exact
answer, spliced into that answer as `rejected`; accepted variants and confident requests are counted, not paired."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.cli.main import main
from tunesmith.tasks.deviation_prefs import deviation_candidates, deviation_pairs
from tunesmith.tasks.json_extract import target_json
from tunesmith.tasks.json_prefs import pref_request_splits


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    from tunesmith.serving.engine import load_for_inference

    return load_for_inference(str(tiny_model_dir), dtype="fp32")


def test_candidates_are_the_likeliest_wrong_tokens_spliced_into_the_exact_answer(tiny_policy):
    from tunesmith.data.formats import Record
    from tunesmith.data.templates import render

    model, tok = tiny_policy
    rows = pref_request_splits(4, 1, 0)[0][:3]
    cands = deviation_candidates(model, tok, rows, batch_size=2, top=3)  # rows of different lengths, padded
    assert [len(c) for c in cands] == [3, 3, 3]
    for row, row_cands in zip(rows, cands):
        gold = target_json(row["target"])
        e = render(Record(messages=[row["messages"][0], {"role": "assistant", "content": gold}]), tok, "last_assistant", 10_000, "truncate")
        answer = [k for k, label in enumerate(e.labels) if label != -100]
        with torch.no_grad():  # the same model, one row, no padding: the probabilities to find
            probs = torch.softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0, [k - 1 for k in answer]].float(), -1)
        probs[torch.arange(len(answer)), [e.input_ids[k] for k in answer]] = 0.0
        best, alt = probs.max(-1)
        order = best.argsort(descending=True)[:3].tolist()
        assert [p for p, _ in row_cands] == pytest.approx(best[order].tolist(), rel=1e-4)
        assert [p for p, _ in row_cands] == sorted((p for p, _ in row_cands), reverse=True)
        for j, (_, text) in zip(order, row_cands):
            tokens = [e.input_ids[k] for k in answer]
            assert text != gold and text.startswith(tok.decode(tokens[:j]))
            if int(alt[j]) not in tok.all_special_ids:
                assert text == tok.decode(tokens[:j] + [int(alt[j])]) + tok.decode(tokens[j + 1 :], skip_special_tokens=True)


def test_pairs_skip_accepted_variants_and_count_confident_requests():
    rows = pref_request_splits(3, 1, 0)[0][:3]
    t = [r["target"] for r in rows]
    wrong_time = target_json({**t[0], "time": "03:00"})
    cands = [
        [(0.30, json.dumps(t[0])), (0.20, wrong_time), (0.10, target_json({**t[0], "name": "Zed"}))],  # other spacing first
        [(0.004, target_json({**t[1], "time": "03:00"}))],                                            # below min_prob
        [(0.05, target_json(t[2])[:-1])],                                                               # cut short
    ]
    pairs, counts = deviation_pairs(cands, rows, n_pairs=10, min_prob=0.01, per_request=1)
    assert [(p["rejected"], p["rejected_kind"], p["rejected_prob"]) for p in pairs] == [
        (wrong_time, "time_shift", 0.2), (target_json(t[2])[:-1], "truncated", 0.05)]
    assert all(p["chosen"] == target_json(r["target"]) and p["rejected_source"] == "policy_deviation" for p, r in zip(pairs, [rows[0], rows[2]]))
    assert counts["requests"] == 3 and counts["right"] == 1 and counts["accepted_variants"] == 1 and counts["pairs"] == 2
    two, _ = deviation_pairs(cands, rows, n_pairs=10, min_prob=0.01, per_request=2)
    assert [p["rejected_kind"] for p in two] == ["time_shift", "wrong_value", "truncated"]
    first, c = deviation_pairs(cands, rows, n_pairs=1, min_prob=0.01)
    assert len(first) == 1 and c["requests"] == 1


def test_cli_writes_deviation_pairs_that_train_dpo_to_divergence(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "prefs"
    main(["task", "make-prefs", "--out", str(out), "--n-train", "8", "--n-eval", "4", "--policy-model", str(tiny_model_dir),
          "--deviations", "--min-prob", "0.001"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["decoding"].startswith("likeliest deviation") and manifest["train"]["pairs"] == 8
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(r["rejected_source"] == "policy_deviation" and r["rejected"] != r["chosen"] and r["rejected_prob"] >= 0.001 for r in rows)
    assert "likeliest-deviation pairs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["task", "make-prefs", "--out", str(out), "--deviations", "--sample-temperature", "1"])
    assert exit_info.value.code == 2
