"""Preference / KTO data: formats, shared-prompt token boundary, skips and errors with file/line/field."""

from __future__ import annotations

import json

import pytest

from tunesmith.data.preference import load_preference_examples
from tunesmith.data.templates import render_prompt, resolve_template
from tunesmith.errors import DataError, SkipReport


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture()
def tok(tokenizer):
    resolve_template(tokenizer, "auto")
    return tokenizer


def test_strings_conversations_and_ranked_lists_share_prompt_tokens(tmp_path, tok):
    conv = [{"role": "user", "content": "Hi"}]
    rows = [
        {"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Five."},
        {"chosen": conv + [{"role": "assistant", "content": "Hello!"}], "rejected": conv + [{"role": "assistant", "content": "Go away."}]},
        {"prompt": conv, "chosen": [{"role": "assistant", "content": "Hey."}], "rejected": [{"role": "assistant", "content": "Bye."}]},
        {"prompt": "Name a colour", "responses": ["Red.", "Blue maybe.", "no"]},
    ]
    report = SkipReport()
    pairs = load_preference_examples(_write(tmp_path / "p.jsonl", rows), tok, "pairwise", report=report)
    assert len(pairs) == 1 + 1 + 1 + 3 and report.kept == 4 and report.skipped == 0
    first = pairs[0]
    prompt = render_prompt([{"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
                            {"role": "user", "content": "What is 2+2?"}], tok)
    assert first.chosen.input_ids[: first.prompt_len] == prompt == first.rejected.input_ids[: first.prompt_len]
    assert tok.decode([t for t in first.chosen.labels if t != -100]) == "Four.<|im_end|>"
    assert all(label == -100 for label in first.chosen.labels[: first.prompt_len])
    ranked = [(tok.decode([t for t in p.chosen.labels if t != -100]), tok.decode([t for t in p.rejected.labels if t != -100])) for p in pairs[3:]]
    assert ranked == [("Red.<|im_end|>", "Blue maybe.<|im_end|>"), ("Red.<|im_end|>", "no<|im_end|>"), ("Blue maybe.<|im_end|>", "no<|im_end|>")]


def test_identical_pairs_are_counted_and_skipped(tmp_path, tok):
    rows = [{"prompt": "a", "chosen": "same", "rejected": "same"}, {"prompt": "b", "chosen": "x", "rejected": "y"}]
    report = SkipReport()
    pairs = load_preference_examples(_write(tmp_path / "p.jsonl", rows), tok, "pairwise", report=report)
    assert len(pairs) == 1 and report.reasons == {"chosen == rejected": 1}
    assert report.examples[0].line == 1 and report.examples[0].field == "rejected"


@pytest.mark.parametrize("row,field,words", [
    ({"prompt": "a", "chosen": "x"}, "rejected", "is missing"),
    ({"prompt": "a", "chosen": "x", "rejected": None}, "rejected", "is null"),
    ({"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]}, "rejected[0]", "prompt mismatch"),
    ({"prompt": "a", "chosen": "x", "rejected": 3}, "rejected", "string or a list"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, tok, row, field, words):
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "x", "rejected": "y"}, row])
    with pytest.raises(DataError) as info:
        load_preference_examples(path, tok, "pairwise")
    problem = info.value.problem
    assert (problem.file, problem.line, problem.field) == (path, 2, field) and words in problem.message


def test_skip_mode_counts_bad_rows(tmp_path, tok):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "x"}, {"prompt": "b", "chosen": "x", "rejected": "y"}])
    report = SkipReport()
    assert len(load_preference_examples(path, tok, "pairwise", on_error="skip", report=report)) == 1
    assert report.reasons == {"missing field": 1} and report.total == 2


def test_kto_rows_and_label_errors(tmp_path, tok):
    rows = [{"prompt": "a", "completion": "good", "label": True}, {"prompt": "a", "completion": "bad", "label": "false"}]
    got = load_preference_examples(_write(tmp_path / "k.jsonl", rows), tok, "unpaired")
    assert [r.label for r in got] == [True, False]
    assert got[0].example.input_ids[: got[0].prompt_len] == got[1].example.input_ids[: got[1].prompt_len]
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "c", "label": "maybe"}])
    with pytest.raises(DataError, match="label.*true .desirable. or false"):
        load_preference_examples(path, tok, "unpaired")


def test_wrong_configured_format_is_refused(tmp_path, tok):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "x", "rejected": "y"}])
    with pytest.raises(DataError, match="needs preference data"):
        load_preference_examples(path, tok, "pairwise", fmt="alpaca")


def _trained(tok, example) -> str:
    return tok.decode([t for t in example.labels if t != -100])


def test_rejected_to_divergence_keeps_the_shared_prefix_and_the_first_differing_token(tmp_path, tok):
    from tunesmith.data.preference import rejected_to_divergence

    rows = [
        {"prompt": "Book it", "chosen": '{"time": "19:30", "size": 2}', "rejected": '{"time": "21:30", "size": 2}'},
        {"prompt": "Book it", "chosen": '{"a": 1}', "rejected": '{"a": 1} Hope this helps!'},  # chosen is a prefix
        {"prompt": "Book it", "chosen": '{"a": 1, "b": 2}', "rejected": '{"a": 1,'},             # rejected is a prefix
        {"prompt": "Book it", "chosen": "Yes", "rejected": "No"},                              # differs at once
    ]
    pairs = load_preference_examples(_write(tmp_path / "p.jsonl", rows), tok, "pairwise", report=SkipReport())
    cut = [rejected_to_divergence(p) for p in pairs]
    for before, after in zip(pairs, cut):
        assert after.chosen is before.chosen and after.rejected.input_ids == before.rejected.input_ids
        kept = [t for t in after.rejected.labels if t != -100]
        full = [t for t in before.rejected.labels if t != -100]
        chosen = [t for t in before.chosen.labels if t != -100]
        assert kept == full[: len(kept)] and kept[:-1] == chosen[: len(kept) - 1] and kept[-1] != chosen[len(kept) - 1]
    # the wrong hour's first digit; the chatter's first word; the premature end of turn; the whole one-token answer
    assert [_trained(tok, c.rejected) for c in cut] == ['{"time": "2', '{"a": 1} Hope', '{"a": 1,<|im_end|>', "No"]
    assert [_trained(tok, p.chosen) for p in cut] == [r["chosen"] + "<|im_end|>" for r in rows]
