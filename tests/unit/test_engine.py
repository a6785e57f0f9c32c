"""Batched generation on a tiny real model, the prompt-row parser, the `generate`/`chat` CLI, and the bundled model."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from tunesmith.errors import DataError, TunesmithError
from tunesmith.serving.engine import GenerationResult, generate, prompt_messages

EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def sharp_model(tiny_model_dir):
    """The tiny random model with weights scaled up so its outputs depend on the whole context, not just the last token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(8)
    return model


@pytest.fixture(scope="module")
def prompts(tokenizer):
    texts = ["hello there how are you", "a", "one two three four five six seven eight nine ten", "hello there how are we"]
    return [tokenizer.encode(t) for t in texts]


def test_greedy_is_deterministic_and_context_sensitive(sharp_model, tokenizer, prompts):
    first = generate(sharp_model, tokenizer, prompts, max_new_tokens=8, stop_ids=[EOS])
    second = generate(sharp_model, tokenizer, prompts, max_new_tokens=8, stop_ids=[EOS])
    assert first == second
    assert all(isinstance(r, GenerationResult) for r in first)
    # prompts 0 and 3 differ only in their last word but also share 4 tokens: the model must read context
    assert first[0].token_ids != first[3].token_ids
    assert first[0].text == tokenizer.decode(first[0].token_ids, skip_special_tokens=True)


def test_left_padded_batch_equals_one_by_one(sharp_model, tokenizer, prompts):
    batched = generate(sharp_model, tokenizer, prompts, max_new_tokens=12, batch_size=4, stop_ids=[EOS])
    single = [generate(sharp_model, tokenizer, [p], max_new_tokens=12, stop_ids=[EOS])[0] for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.text for r in batched] == [r.text for r in single]
    # batches of 2 (sorted by length, order restored) agree as well
    pairs = generate(sharp_model, tokenizer, prompts, max_new_tokens=12, batch_size=2, stop_ids=[EOS])
    assert pairs == batched


def test_max_new_tokens_is_respected(sharp_model, tokenizer, prompts):
    for n in (1, 5):
        for result in generate(sharp_model, tokenizer, prompts, max_new_tokens=n, stop_ids=[EOS]):
            assert len(result.token_ids) <= n
            if not result.finished:
                assert len(result.token_ids) == n


def test_stop_token_ends_generation(sharp_model, tokenizer, prompts):
    free = generate(sharp_model, tokenizer, prompts[:1], max_new_tokens=6, stop_ids=[EOS])[0]
    assert not free.finished and len(free.token_ids) == 6
    first_token = free.token_ids[0]
    stopped = generate(sharp_model, tokenizer, prompts[:1], max_new_tokens=6, stop_ids=[first_token])[0]
    assert stopped == GenerationResult(text="", token_ids=[], finished=True)
    # stopping at a later token keeps the tokens before it, the stop token itself is dropped
    third = free.token_ids[2]
    if third not in free.token_ids[:2]:
        cut = generate(sharp_model, tokenizer, prompts[:1], max_new_tokens=6, stop_ids=[third])[0]
        assert cut.token_ids == free.token_ids[:2] and cut.finished


def test_sampling_is_seeded_and_leaves_global_rng_alone(sharp_model, tokenizer, prompts):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(sharp_model, tokenizer, prompts, max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7, stop_ids=[EOS])
    after = torch.rand(1)
    b = generate(sharp_model, tokenizer, prompts, max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7, stop_ids=[EOS])
    c = generate(sharp_model, tokenizer, prompts, max_new_tokens=10, temperature=1.5, top_p=0.95, seed=8, stop_ids=[EOS])
    assert torch.equal(before, after)
    assert a == b
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_model_mode_is_restored_and_bad_arguments_rejected(sharp_model, tokenizer, prompts):
    sharp_model.train()
    generate(sharp_model, tokenizer, prompts[:1], max_new_tokens=2, stop_ids=[EOS])
    assert sharp_model.training
    sharp_model.eval()
    assert generate(sharp_model, tokenizer, [], stop_ids=[EOS]) == []
    with pytest.raises(TunesmithError, match="prompt 1 is empty"):
        generate(sharp_model, tokenizer, [prompts[0], []], stop_ids=[EOS])
    with pytest.raises(TunesmithError, match="top_p"):
        generate(sharp_model, tokenizer, prompts, top_p=0.0, stop_ids=[EOS])
    with pytest.raises(TunesmithError, match="max_new_tokens"):
        generate(sharp_model, tokenizer, prompts, max_new_tokens=0, stop_ids=[EOS])


def test_default_stop_ids_come_from_the_template(sharp_model, tokenizer, prompts):
    free = generate(sharp_model, tokenizer, prompts[:2], max_new_tokens=4, stop_ids=[EOS])
    default = generate(sharp_model, tokenizer, prompts[:2], max_new_tokens=4)
    assert free == default  # stop_token_ids(SmolLM2) == [<|im_end|>]


# ------------------------------------------------------------------ prompt rows


def test_prompt_messages_accepts_prompt_and_messages_rows():
    assert prompt_messages({"prompt": "hi"}, "f.jsonl", 1) == [{"role": "user", "content": "hi"}]
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "reference"}], "id": 7}
    assert prompt_messages(row, "f.jsonl", 2) == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": 3}, "prompt", "non-empty string"),
        ({"prompt": "  "}, "prompt", "non-empty string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "must be one of"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "must be a string"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "must end with a user turn"),
        ({"question": "x"}, None, "needs a 'prompt'"),
    ],
)
def test_prompt_messages_names_file_line_and_field(row, field, message):
    with pytest.raises(DataError, match=message) as info:
        prompt_messages(row, "in.jsonl", 4)
    assert (info.value.problem.file, info.value.problem.line, info.value.problem.field) == ("in.jsonl", 4, field)


# ------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cli():
    from tunesmith.cli import generate as generate_cli

    app = typer.Typer()
    generate_cli.register(app)
    return app


def test_generate_cli_writes_outputs_and_counts_skipped_rows(cli, tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"prompt": "Say hi", "id": 1}),
        json.dumps({"bad": "row"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Count to three"}], "id": 2}),
    ]) + "\n")
    out = tmp_path / "sub" / "out.jsonl"
    result = CliRunner().invoke(cli, ["generate", str(src), "-o", str(out), "--model", str(tiny_model_dir),
                                      "--max-new-tokens", "5", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2]
    assert all(isinstance(r["output"], str) and isinstance(r["finished"], bool) for r in rows)
    assert "2 of 4 rows kept; skipped 2" in result.output
    assert "in.jsonl:2" in result.output and "in.jsonl:3" in result.output


def test_generate_cli_stop_mode_and_missing_file_exit_2(cli, tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": 5}) + "\n")
    args = ["-o", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir)]
    result = CliRunner().invoke(cli, ["generate", str(src), *args, "--on-error", "stop"])
    assert result.exit_code == 2
    assert "in.jsonl:2: field 'prompt'" in " ".join(result.output.split())
    missing = CliRunner().invoke(cli, ["generate", str(tmp_path / "nope.jsonl"), *args])
    assert missing.exit_code == 2 and "file not found" in " ".join(missing.output.split())


def test_chat_cli_keeps_history_resets_and_exits(cli, tiny_model_dir):
    stdin = "hello\nand again\n/reset\nfresh start\n/exit\nnever read\n"
    result = CliRunner().invoke(cli, ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3",
                                      "--temperature", "0", "--dtype", "fp32"], input=stdin)
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant>") == 3
    assert "conversation cleared" in result.output
    # EOF ends the session too
    eof = CliRunner().invoke(cli, ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "2"], input="hi\n")
    assert eof.exit_code == 0 and eof.output.count("assistant>") == 1


# ------------------------------------------------------------------ bundled model


@pytest.mark.slow
def test_bundled_model_chats_and_base_scores_low_on_quickstart(tmp_path):
    from tunesmith.cli.task import score_model
    from tunesmith.data.templates import render_prompt
    from tunesmith.serving.engine import load_for_inference
    from tunesmith.tasks.json_extract import write_quickstart

    model, tokenizer = load_for_inference("smollm2-135m-instruct")
    ids = render_prompt([{"role": "user", "content": "What is the capital of France?"}], tokenizer)
    answer = generate(model, tokenizer, [ids], max_new_tokens=24)[0]
    assert answer.text.strip()
    paths = write_quickstart(tmp_path, n_train=10, n_eval=20, seed=0)
    scores = score_model(model, tokenizer, paths["eval"], max_new_tokens=96, batch_size=20)
    assert scores["n"] == 20
    assert scores["exact_match"] <= 0.30
