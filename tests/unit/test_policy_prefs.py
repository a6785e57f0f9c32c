"""On-policy preference pairs: the policy's own wrong answers become `rejected`; right and empty answers are
counted, never paired; requests stay disjoint from the held-out sets; the CLI writes files a DPO run loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.errors import TunesmithError
from tunesmith.tasks.json_extract import make_split, target_json
from tunesmith.tasks.json_prefs import make_pref_splits, pref_request_splits
from tunesmith.tasks.policy_prefs import policy_pairs, write_policy_prefs


def _scripted(answers_by_index):
    """An answer function that replays fixed outputs per request, in order (the pairing logic under test)."""
    calls: list[int] = []

    def answer(conversations):
        start = sum(calls)
        calls.append(len(conversations))
        return [answers_by_index(start + i, c) for i, c in enumerate(conversations)]

    answer.calls = calls
    return answer


def test_wrong_answers_become_pairs_right_and_empty_are_counted():
    rows = make_split(10, seed=3)

    def outputs(i, conversation):
        target = rows[i]["target"]
        return [target_json(target), json.dumps(target), "", target_json({**target, "time": "08:00"}),
                "Here is the JSON:\n" + target_json(target)][i % 5]

    pairs, counts = policy_pairs(_scripted(outputs), rows, n_pairs=3, chunk=4)
    # rows 0,1 right (compact and other spacing), 2 empty, 3 time wrong, 4 preamble, 5,6 right, 7 empty, 8 time wrong
    assert counts == {"requests": 9, "right": 4, "empty": 2, "pairs": 3, "from_greedy": 3, "from_samples": 0,
                      "kinds": {"preamble": 1, "time_shift": 2}}
    assert [p["rejected_kind"] for p in pairs] == ["time_shift", "preamble", "time_shift"]
    for pair, index in zip(pairs, (3, 4, 8)):
        assert pair["prompt"] == rows[index]["messages"][0]["content"]
        assert pair["chosen"] == target_json(rows[index]["target"]) != pair["rejected"]
        assert pair["rejected_source"] == "policy"


def test_right_greedy_answers_get_a_sampled_wrong_answer_paired():
    rows = make_split(6, seed=5)
    greedy = _scripted(lambda i, c: target_json(rows[i]["target"]) if i % 2 == 0 else "oops")   # rows 0, 2, 4 right
    by_prompt = {r["messages"][0]["content"]: r["target"] for r in rows}
    sampled: list[str] = []

    def sample(conversations):  # the first right row samples a wrong time, the others sample the right answer again
        sampled.extend(c[0]["content"] for c in conversations)
        targets = [by_prompt[c[0]["content"]] for c in conversations]
        return [target_json({**t, "time": "23:59"}) if k == 0 else target_json(t) for k, t in enumerate(targets)]

    pairs, counts = policy_pairs(greedy, rows, n_pairs=10, chunk=6, sample=sample)
    assert sampled == [rows[i]["messages"][0]["content"] for i in (0, 2, 4)]   # only requests answered right
    assert counts == {"requests": 6, "right": 2, "empty": 0, "pairs": 4, "from_greedy": 3, "from_samples": 1,
                      "kinds": {"no_json": 3, "time_shift": 1}}
    assert [p["rejected_source"] for p in pairs] == ["policy", "policy", "policy", "policy_sample"]
    assert pairs[-1]["prompt"] == rows[0]["messages"][0]["content"] and '"23:59"' in pairs[-1]["rejected"]


def test_stops_answering_once_enough_pairs():
    rows = make_split(200, seed=1)
    answer = _scripted(lambda i, c: "no idea")
    pairs, counts = policy_pairs(answer, rows, n_pairs=5, chunk=16)
    assert len(pairs) == 5 and counts["requests"] == 5 and counts["kinds"] == {"no_json": 5}
    assert answer.calls == [16]  # one chunk, not the 200 rows


def test_request_splits_match_the_synthetic_generator_and_stay_disjoint():
    train, evals = pref_request_splits(30, 20, seed=0)
    synthetic_train, synthetic_eval = make_pref_splits(30, 20, seed=0)
    assert [r["messages"][0]["content"] for r in train] == [p["prompt"] for p in synthetic_train]
    assert [r["messages"][0]["content"] for r in evals] == [p["prompt"] for p in synthetic_eval]
    quickstart_eval = {r["messages"][0]["content"] for r in make_split(100, seed=1)}
    train_prompts, eval_prompts = {r["messages"][0]["content"] for r in train}, {r["messages"][0]["content"] for r in evals}
    assert not (train_prompts & eval_prompts) and not (train_prompts | eval_prompts) & quickstart_eval


def test_a_policy_that_is_always_right_cannot_fill_a_split(tmp_path):
    by_prompt = {r["messages"][0]["content"]: r["target"] for r in
                 sum(pref_request_splits(6 * 4, 6 * 2, seed=0), [])}
    always_right = lambda convs: [target_json(by_prompt[c[0]["content"]]) for c in convs]  # noqa: E731
    with pytest.raises(TunesmithError, match=r"train: only 0 of 4 wanted pairs after 24 requests \(24 answered right"):
        write_policy_prefs(tmp_path, always_right, n_train=4, n_eval=2)


def test_cli_writes_pairs_from_a_tiny_policy_and_they_load_for_dpo(tmp_path, tiny_model_dir, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).save_pretrained(adapter)
    out = tmp_path / "prefs"
    main(["task", "make-prefs", "--out", str(out), "--n-train", "6", "--n-eval", "3", "--policy-model", str(tiny_model_dir),
          "--policy-adapter", str(adapter), "--batch-size", "8"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"model": str(tiny_model_dir), "adapter": str(adapter), "decoding": "greedy"}
    assert manifest["train"]["pairs"] == 6 and manifest["eval"]["pairs"] == 3
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["rejected_source"] == "policy" and r["rejected"] != r["chosen"] for r in rows)
    assert "on-policy pairs" in capsys.readouterr().out
    # the pairs load through the DPO config like the synthetic ones
    main(["validate", str(Path(__file__).resolve().parents[2] / "configs/dpo_demo.yaml"), f"model.name_or_path={tiny_model_dir}",
          "model.dtype=fp32", f"model.adapter={adapter}", f"data.train=[{{path: {out / 'train.jsonl'}}}]",
          f"data.eval=[{{path: {out / 'eval.jsonl'}}}]", f"output.dir={tmp_path / 'run'}", f"align.ref_logps_cache={tmp_path / 'c'}",
          "--no-time-step"])
    text = re.sub(r"[\u2500-\u257f\s]+", " ", capsys.readouterr().out)  # the table as plain words
    assert "objective dpo, reference: copy" in text and "eval rows 3" in text and "12 rows" in text


def test_cli_refuses_kinds_with_a_policy(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["task", "make-prefs", "--out", str(tmp_path), "--kinds", "time_shift", "--policy-adapter", str(tmp_path)])
    assert exit_info.value.code == 2


def test_sampled_mode_pairs_distinct_wrong_samples_capped_per_request():
    from tunesmith.tasks.policy_prefs import sampled_pairs

    rows = make_split(4, seed=7)
    by_prompt = {r["messages"][0]["content"]: r["target"] for r in rows}
    order = [r["messages"][0]["content"] for r in rows]

    def sample(conversations):  # 3 samples per request, in request order
        assert [c[0]["content"] for c in conversations] == [p for p in order for _ in range(3)]
        out = []
        for k, c in enumerate(conversations):
            t, row = by_prompt[c[0]["content"]], order.index(c[0]["content"])
            out.append([
                [target_json(t)] * 3,                                                         # row 0: always right
                [target_json(t), "oops", "oops"],                                             # row 1: one distinct wrong
                [target_json({**t, "time": "01:00"}), "oops", target_json({**t, "time": "02:00"})],  # row 2: 3 wrong, cap 2
                ["", target_json(t), "Sure! " + target_json(t)],                              # row 3: empty + preamble
            ][row][k % 3])
        return out

    pairs, counts = sampled_pairs(sample, rows, n_pairs=10, samples=3, chunk=4)
    assert [(order.index(p["prompt"]), p["rejected_kind"]) for p in pairs] == [
        (1, "no_json"), (2, "time_shift"), (2, "no_json"), (3, "preamble")]
    assert all(p["chosen"] == target_json(by_prompt[p["prompt"]]) and p["rejected_source"] == "policy_sample" for p in pairs)
    assert counts == {"requests": 4, "right": 1, "empty": 1, "pairs": 4, "from_greedy": 0, "from_samples": 4,
                      "samples": 12, "right_samples": 5, "kinds": {"no_json": 2, "preamble": 1, "time_shift": 1}}


def test_sampled_mode_needs_a_sampler(tmp_path):
    with pytest.raises(TunesmithError, match="temperature"):
        write_policy_prefs(tmp_path, lambda c: [], 2, 2, samples_per_request=4)
    with pytest.raises(SystemExit) as exit_info:
        main(["task", "make-prefs", "--out", str(tmp_path / "p"), "--policy-adapter", str(tmp_path), "--samples-per-request", "4"])
    assert exit_info.value.code == 2


def test_cli_incomplete_requests_pair_null_against_the_policys_answer_and_write_eval_requests(tmp_path, tiny_model_dir, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.tasks.json_prefs import incomplete_request_splits

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).save_pretrained(adapter)
    out = tmp_path / "prefs"
    main(["task", "make-prefs", "--out", str(out), "--n-train", "4", "--n-eval", "2", "--policy-model", str(tiny_model_dir),
          "--policy-adapter", str(adapter), "--incomplete", "--batch-size", "8"])
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    # interleaved: the policy's answer to an incomplete request vs null there; a complete request's value vs null
    assert len(rows) == 4 and [r["rejected_source"] for r in rows] == ["policy", "synthetic"] * 2
    assert all(": null" in r["chosen"] and r["rejected"] != r["chosen"] for r in rows[::2])
    assert all(r["rejected_kind"] == "dropped_value" and ": null" in r["rejected"] and ": null" not in r["chosen"] for r in rows[1::2])
    assert [r["prompt"] for r in rows[1::2]] == [r["messages"][0]["content"] for r in pref_request_splits(4, 2, 0)[0][:2]]
    requests = [json.loads(line) for line in (out / "eval_requests.jsonl").read_text().splitlines()]
    assert requests == incomplete_request_splits(24, 100, 0)[1][:100]  # the held-out requests, make-data format
    assert not {r["prompt"] for r in rows} & {r["messages"][0]["content"] for r in requests}
    with pytest.raises(SystemExit) as exit_info:
        main(["task", "make-prefs", "--out", str(out), "--incomplete"])
    assert exit_info.value.code == 2
