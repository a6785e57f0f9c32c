"""Likelihood metrics on the tiny model vs its own forward pass; ROUGE/BLEU/chrF wrappers vs the libraries."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunesmith.errors import DataError

QA = [("What is ice?", "Frozen water."), ("Name a prime.", "Seven is prime."), ("Capital of Italy?", "Rome is the capital of Italy."),
      ("Opposite of hot?", "Cold.")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tunesmith.serving.engine import load_for_inference

    return load_for_inference(str(tiny_model_dir), dtype="fp32")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_perplexity_equals_exp_mean_ce_from_the_models_own_forward(tmp_path, tiny):
    from tunesmith.config.schema import DataConfig, DataSource
    from tunesmith.data.dataset import build_examples
    from tunesmith.evaluation.likelihood import run_likelihood

    model, tok = tiny
    path = _write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA])
    res = run_likelihood(model, tok, path)
    examples, _ = build_examples([DataSource(path=path)], tok, DataConfig())
    nll, count, nbytes = 0.0, 0, 0
    with torch.no_grad():
        for ex in examples:
            logits = model(torch.tensor([ex.input_ids])).logits[0, :-1].double()  # (T-1, V)
            logp = torch.log_softmax(logits, -1)
            for pos, label in enumerate(ex.labels[1:]):
                if label != -100:
                    nll -= float(logp[pos, label])
                    count += 1
            nbytes += len(tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != -100], skip_special_tokens=True).encode())
    assert res["metrics"]["tokens"] == count
    assert res["metrics"]["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert res["metrics"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert res["metrics"]["bits_per_byte"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-5)
    assert len(res["items"]) == len(QA) and res["directions"]["perplexity"] is False


def test_multiple_choice_picks_the_most_likely_choice(tmp_path, tiny):
    from tunesmith.data.formats import Record
    from tunesmith.data.templates import render
    from tunesmith.evaluation.likelihood import load_choice_items, run_multiple_choice

    model, tok = tiny
    rows = [{"question": "What is ice?", "choices": ["Frozen water.", "Hot air.", "A kind of tree."], "answer": 0},
            {"question": "Opposite of hot?", "choices": ["Warm.", "Cold."], "answer": "Cold."}]
    items = load_choice_items(_write(tmp_path / "mc.jsonl", rows))
    assert items[1]["answer"] == 1
    res = run_multiple_choice(model, tok, items)
    for item, scored in zip(items, res["items"]):
        logps = []
        for choice in item["choices"]:
            ex = render(Record(messages=[{"role": "user", "content": item["question"]}, {"role": "assistant", "content": choice}]),
                        tok, train_on="last_assistant")
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ex.input_ids])).logits[0, :-1].double(), -1)
            logps.append(sum(float(logp[p, lab]) for p, lab in enumerate(ex.labels[1:]) if lab != -100))
        best = max(range(len(logps)), key=logps.__getitem__)
        norm = max(range(len(logps)), key=lambda i: logps[i] / len(item["choices"][i].encode()))
        assert scored["scores"]["acc"] == float(best == item["answer"])
        assert scored["scores"]["acc_norm"] == float(norm == item["answer"])
        assert scored["output"] == item["choices"][best]


def test_multiple_choice_bad_rows_name_line_and_field(tmp_path):
    from tunesmith.evaluation.likelihood import load_choice_items

    path = _write(tmp_path / "bad.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'answer'"):
        load_choice_items(path)
    with pytest.raises(DataError, match="field 'choices'"):
        load_choice_items(_write(tmp_path / "c.jsonl", [{"question": "q", "choices": ["only"], "answer": 0}]))


def test_rouge_bleu_chrf_wrappers_match_the_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    from tunesmith.evaluation.generation import bleu_chrf, corpus_bleu_chrf, rouge_scores

    out, refs = "the cat sat on the mat today", ["the cat is sitting on the mat", "a cat sat on a mat"]
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = rouge_scores(out, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(max(direct.score(r, out)[key].fmeasure for r in refs))
    assert ours["rouge1"] > 0.5
    sent = bleu_chrf(out, refs)
    assert sent["bleu"] == pytest.approx(sacrebleu.sentence_bleu(out, refs).score)
    assert sent["chrf"] == pytest.approx(sacrebleu.sentence_chrf(out, refs).score)
    outs = [out, "hello there world"]
    corpus = corpus_bleu_chrf(outs, [refs, ["hello world"]])
    streams = [[refs[0], "hello world"], [refs[1], "hello world"]]
    assert corpus["corpus_bleu"] == pytest.approx(sacrebleu.corpus_bleu(outs, streams).score)
    assert corpus["corpus_chrf"] == pytest.approx(sacrebleu.corpus_chrf(outs, streams).score)
    assert bleu_chrf("identical text here ok", ["identical text here ok"])["bleu"] == pytest.approx(100.0)


def test_item_scores_exact_regex_and_json_fields():
    from tunesmith.evaluation.generation import score_item

    item = {"references": ["Paris"], "target": {"city": "Paris", "n": 2}, "pattern": r"\bParis\b"}
    s = score_item("  paris ", item)
    assert s["exact_match"] == 1.0 and s["regex_match"] == 0.0  # regex is case-sensitive; exact match is normalised
    assert score_item('Answer: {"city": "Paris", "n": "2"}', item)["json_field_match"] == 0.5  # "2" is not 2
    assert score_item('{"city": "Paris", "n": 2}', item)["json_field_match"] == 1.0


def test_generation_items_need_references(tmp_path):
    from tunesmith.evaluation.generation import load_generation_items

    ok = load_generation_items(_write(tmp_path / "ok.jsonl", [
        {"prompt": "Say hi", "reference": "hi"},
        {"messages": [{"role": "user", "content": "Say yo"}, {"role": "assistant", "content": "yo"}]}]))
    assert [i["references"] for i in ok] == [["hi"], ["yo"]] and ok[1]["messages"] == [{"role": "user", "content": "Say yo"}]
    with pytest.raises(DataError, match=r"missing.jsonl:2: field 'reference'"):
        load_generation_items(_write(tmp_path / "missing.jsonl", [{"prompt": "a", "reference": "b"}, {"prompt": "c"}]))
    with pytest.raises(DataError, match="field 'pattern'"):
        load_generation_items(_write(tmp_path / "re.jsonl", [{"prompt": "a", "pattern": "("}]))


def test_batched_likelihood_equals_one_row_at_a_time(tmp_path, tiny):
    """Rows of very different lengths, batched with right padding: per-row NLL equal to the unbatched path."""
    from tunesmith.config.schema import DataConfig, DataSource
    from tunesmith.data.dataset import build_examples
    from tunesmith.evaluation.likelihood import _row_ce, run_likelihood

    model, tok = tiny
    rows = [{"messages": [{"role": "user", "content": q * (1 + 3 * (i % 3))}, {"role": "assistant", "content": a * (1 + i % 2)}]}
            for i, (q, a) in enumerate(QA * 2)]
    path = _write(tmp_path / "mixed.jsonl", rows)
    examples, _ = build_examples([DataSource(path=path)], tok, DataConfig())
    assert len({len(e.input_ids) for e in examples}) >= 4  # padding really happens
    one = [_row_ce(model, e.input_ids, e.labels) for e in examples]
    for batch_size in (3, 8):
        res = run_likelihood(model, tok, path, batch_size=batch_size)
        for item, (ce, count) in zip(res["items"], one):
            assert item["scores"]["nll"] == pytest.approx(ce / count, abs=1e-5)
        assert res["metrics"]["tokens"] == sum(c for _, c in one)
        assert res["metrics"]["loss"] == pytest.approx(sum(ce for ce, _ in one) / sum(c for _, c in one), abs=1e-5)
