"""The quickstart preference generator: deterministic bytes, every failure kind, exact chosen, held-out eval."""

from __future__ import annotations

import json

from tunesmith.cli.main import main
from tunesmith.data.preference import load_preference_examples
from tunesmith.errors import SkipReport
from tunesmith.tasks.json_extract import FIELDS, make_split
from tunesmith.tasks.json_prefs import DEFAULT_KINDS, REJECTED_KINDS, make_pref_splits, write_quickstart_prefs
from tunesmith.tasks.scoring import parse_json_object, same_value


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a = write_quickstart_prefs(tmp_path / "a", n_train=40, n_eval=20, seed=0)
    b = write_quickstart_prefs(tmp_path / "b", n_train=40, n_eval=20, seed=0)
    c = write_quickstart_prefs(tmp_path / "c", n_train=40, n_eval=20, seed=1)
    for split in ("train", "eval"):
        assert a[split].read_bytes() == b[split].read_bytes()
        assert a[split].read_bytes() != c[split].read_bytes()


def test_chosen_is_the_exact_target_and_every_kind_is_a_real_failure():
    train, evals = make_pref_splits(99, 33, seed=0, kinds=tuple(REJECTED_KINDS))
    for rows in (train, evals):
        assert {r["rejected_kind"] for r in rows} == set(REJECTED_KINDS)  # every kind in both splits
        for r in rows:
            chosen = parse_json_object(r["chosen"])
            assert list(chosen) == list(FIELDS) and all(same_value(chosen[k], r["target"][k]) for k in FIELDS)
            assert r["chosen"] == r["chosen"].strip() and "\n" not in r["chosen"]  # compact, no chatter
            assert r["rejected"] != r["chosen"]
            rejected = parse_json_object(r["rejected"])
            exact = rejected is not None and set(rejected) == set(FIELDS) and all(same_value(rejected[k], r["target"][k]) for k in FIELDS)
            # only a fenced answer still parses to the exact target (the scorer tolerates one fence); it is a style failure
            assert exact == (r["rejected_kind"] == "fence"), r
    by_kind = {r["rejected_kind"]: r for r in train}
    assert by_kind["preamble"]["rejected"].endswith(by_kind["preamble"]["chosen"])
    assert by_kind["continuation"]["rejected"].startswith(by_kind["continuation"]["chosen"] + "\n")
    assert by_kind["truncated"]["chosen"].startswith(by_kind["truncated"]["rejected"])
    assert isinstance(json.loads(by_kind["party_size_string"]["rejected"])["party_size"], str)
    assert len(json.loads(by_kind["missing_key"]["rejected"])) == 4
    time = json.loads(by_kind["time_12h"]["rejected"])["time"]
    assert time.lower().endswith(("am", "pm"))
    swapped = json.loads(by_kind["swapped_fields"]["rejected"])
    assert swapped["name"] == by_kind["swapped_fields"]["target"]["restaurant"]
    flipped, right = json.loads(by_kind["ampm_flip"]["rejected"])["time"], by_kind["ampm_flip"]["target"]["time"]
    assert abs(int(flipped[:2]) - int(right[:2])) == 12 and flipped[2:] == right[2:]  # other side of noon, same minutes
    for kind, field in (("time_shift", "time"), ("date_shift", "date")):  # same format, wrong value
        wrong, right = json.loads(by_kind[kind]["rejected"])[field], by_kind[kind]["target"][field]
        assert wrong != right and len(wrong) == len(right) and wrong[2 if field == "time" else 4] == right[2 if field == "time" else 4]
    default, _ = make_pref_splits(18, 9, seed=0)
    assert [r["rejected_kind"] for r in default[:9]] == list(DEFAULT_KINDS) and len(DEFAULT_KINDS) == 9


def test_eval_requests_are_disjoint_from_train_and_from_the_quickstart_eval_set():
    train, evals = make_pref_splits(300, 100, seed=0)
    train_prompts, eval_prompts = {r["prompt"] for r in train}, {r["prompt"] for r in evals}
    assert len(train_prompts) == 300 and len(eval_prompts) == 100
    assert not train_prompts & eval_prompts
    quickstart_eval = {r["messages"][0]["content"] for r in make_split(100, seed=1)}
    assert not quickstart_eval & (train_prompts | eval_prompts)


def test_cli_writes_files_the_preference_reader_accepts(tmp_path, tokenizer):
    out = tmp_path / "prefs"
    main(["task", "make-prefs", "--out", str(out), "--n-train", "18", "--n-eval", "9", "--kinds", "time_shift,fence"])
    rows = read(out / "train.jsonl")
    assert len(rows) == 18 and len(read(out / "eval.jsonl")) == 9
    assert [r["rejected_kind"] for r in rows[:3]] == ["time_shift", "fence", "time_shift"]
    report = SkipReport()
    pairs = load_preference_examples(str(out / "train.jsonl"), tokenizer, "pairwise", max_length=256, report=report)
    assert len(pairs) == 18 and report.kept == 18
    first = pairs[0]
    assert first.chosen.input_ids[: first.prompt_len] == first.rejected.input_ids[: first.prompt_len]
    answer = tokenizer.decode([t for t, label in zip(first.chosen.input_ids, first.chosen.labels) if label != -100])
    assert answer.startswith(rows[0]["chosen"])


def test_classify_output_finds_each_generated_failure_kind_and_the_exact_answer():
    from tunesmith.tasks.json_prefs import behaviour_report, classify_output

    train, _ = make_pref_splits(99, 11, seed=3, kinds=tuple(REJECTED_KINDS))
    for r in train:
        assert classify_output(r["chosen"], r["target"]) == "exact"
        assert classify_output(r["rejected"], r["target"]) == r["rejected_kind"], r
    assert classify_output("I cannot help with that.", train[0]["target"]) == "no_json"
    wrong = json.dumps({**train[0]["target"], "party_size": train[0]["target"]["party_size"] + 1})
    assert classify_output(wrong, train[0]["target"]) == "wrong_value"
    report = behaviour_report([r["rejected"] for r in train[:11]] + [r["chosen"] for r in train[:11]], [r["target"] for r in train[:11]] * 2)
    assert report["n"] == 22 and report["kinds"]["exact"] == 11
    assert report["verbose_rate"] == 3 / 22 and report["exact_compact_rate"] == 0.5


def test_unknown_kind_is_a_clean_cli_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["task", "make-prefs", "--out", str(tmp_path), "--kinds", "preamble,nonsense"])
    assert exc.value.code == 2 and "unknown nonsense" in capsys.readouterr().err


def test_classify_output_names_invented_and_dropped_values():
    from tunesmith.tasks.json_extract import target_json
    from tunesmith.tasks.json_prefs import classify_output, incomplete_request_splits

    train, evals = incomplete_request_splits(20, 10, seed=0)
    quickstart_eval = {r["messages"][0]["content"] for r in make_split(100, seed=1)}
    requests = [r["messages"][0]["content"] for r in train + evals]
    assert len(set(requests)) == 30 and not set(requests) & quickstart_eval
    target = train[0]["target"]
    assert target["time"] is None and classify_output(target_json(target), target) == "exact"
    assert classify_output(target_json({**target, "time": "19:00"}), target) == "invented_value"
    complete = make_split(1, seed=4)[0]["target"]
    assert classify_output(target_json({**complete, "time": None}), complete) == "dropped_value"
