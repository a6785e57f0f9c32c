"""Templates and loss masks on the real bundled SmolLM2 tokenizer: masks are pinned, not eyeballed."""

from __future__ import annotations

import copy

import pytest

from tunesmith.data.formats import Record
from tunesmith.data.templates import (
    BoundaryError,
    EmptyMaskError,
    render,
    render_prompt,
    resolve_template,
    stop_token_ids,
)
from tunesmith.errors import DataError, TunesmithError

SINGLE = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
MULTI = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "answer1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "answer2"},
]
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)


@pytest.fixture
def tok(tokenizer):
    """A private copy: resolve_template and add_bos_token mutate the tokenizer."""
    return copy.deepcopy(tokenizer)


@pytest.fixture
def bare(tokenizer):
    """A private copy with its chat template removed."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def rec(messages=None, text=None, line=7) -> Record:
    return Record(messages=messages or [], text=text, source="data.jsonl", line=line)


def trained_text(example, tokenizer) -> str:
    return tokenizer.decode([i for i, lab in zip(example.input_ids, example.labels) if lab != -100])


def test_single_turn_mask_is_answer_plus_end_of_turn(tok):
    ex = render(rec(SINGLE), tok)
    assert tok.decode(ex.input_ids) == (
        SMOL_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    )
    # exactly two trained tokens: "4" (id 36) and <|im_end|> (id 2); the final newline (198) is masked
    assert len(ex.input_ids) == 40
    assert ex.input_ids[-3:] == [36, 2, 198]
    assert ex.labels == [-100] * 37 + [36, 2, -100]
    assert not ex.truncated and (ex.source, ex.line) == ("data.jsonl", 7)


def test_multi_turn_trains_every_answer(tok):
    ex = render(rec(MULTI), tok)
    assert trained_text(ex, tok) == "answer1<|im_end|>answer2<|im_end|>"
    trained = [k for k, lab in enumerate(ex.labels) if lab != -100]
    # two contiguous runs, each followed by a masked newline
    runs = [k for k in trained if k - 1 not in trained]
    assert len(runs) == 2
    for k in trained:
        if k + 1 not in trained:
            assert tok.decode([ex.input_ids[k]]) == "<|im_end|>"
            assert ex.labels[k + 1] == -100 and tok.decode([ex.input_ids[k + 1]]) == "\n"


def test_last_assistant_and_everything(tok):
    last = render(rec(MULTI), tok, train_on="last_assistant")
    assert trained_text(last, tok) == "answer2<|im_end|>"
    every = render(rec(MULTI), tok, train_on="everything")
    assert every.labels == every.input_ids
    assert tok.decode(every.input_ids) == tok.apply_chat_template(MULTI, tokenize=False)
    with pytest.raises(TunesmithError, match="train_on"):
        render(rec(MULTI), tok, train_on="answers")


def test_alpaca_template_multi_turn_and_generation_prompt(bare):
    resolve_template(bare, "alpaca")
    ex = render(rec(MULTI), bare)
    assert bare.decode(ex.input_ids) == (
        ALPACA_PREAMBLE + "### Instruction:\nq1\n\n### Response:\nanswer1<|im_end|>\n\n"
        "### Instruction:\nq2\n\n### Response:\nanswer2<|im_end|>\n\n"
    )
    assert trained_text(ex, bare) == "answer1<|im_end|>answer2<|im_end|>"
    with_system = [{"role": "system", "content": "Be terse."}] + SINGLE[:1]
    prompt = bare.decode(render_prompt(with_system, bare))
    assert prompt == "Be terse.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n"


def test_chatml_builtin_and_auto_fallback(bare):
    resolve_template(bare, "auto")  # no template of its own -> chatml
    ex = render(rec(SINGLE), bare)
    assert bare.decode(ex.input_ids) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    )
    assert trained_text(ex, bare) == "4<|im_end|>"
    resolve_template(bare, "chatml")
    assert render(rec(SINGLE), bare).input_ids == ex.input_ids


def test_auto_keeps_the_tokenizers_own_template(tok):
    own = tok.chat_template
    resolve_template(tok, "auto")
    assert tok.chat_template == own
    resolve_template(tok, "tokenizer")
    assert tok.chat_template == own


def test_template_names_and_files(bare, tmp_path):
    with pytest.raises(TunesmithError, match="no chat template"):
        resolve_template(bare, "tokenizer")
    with pytest.raises(TunesmithError, match="not 'auto'"):
        resolve_template(bare, "vicuna")
    path = tmp_path / "t.jinja"
    path.write_text(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}"
        "{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    resolve_template(bare, str(path))
    ex = render(rec(SINGLE), bare)
    assert bare.decode(ex.input_ids) == "<user>What is 2+2?\n<assistant>4<|im_end|>\n"
    assert trained_text(ex, bare) == "4<|im_end|>"


def test_no_double_bos_when_tokenizer_adds_bos(bare):
    bare.add_bos_token = True
    assert bare("a").input_ids == [1, 81]  # the tokenizer now adds BOS (<|im_start|>, id 1) itself
    resolve_template(bare, "alpaca")  # text has no BOS: one is prepended, masked
    ex = render(rec(SINGLE), bare)
    assert ex.input_ids[0] == 1 and ex.input_ids[1] != 1 and ex.labels[0] == -100
    assert bare.decode(ex.input_ids[1:]).startswith("Below is an instruction")
    prompt = render_prompt(SINGLE[:1], bare)
    assert prompt[0] == 1 and prompt[1] != 1 and ex.input_ids[: len(prompt)] == prompt
    resolve_template(bare, "chatml")  # text already starts with BOS: nothing prepended
    ex = render(rec(SINGLE), bare)
    assert ex.input_ids[:3] == [1, 4093, 198]
    assert render_prompt(SINGLE[:1], bare)[:3] == [1, 4093, 198]


def test_double_bos_from_template_is_refused(tok):
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    with pytest.raises(DataError, match="double BOS"):
        render(rec(SINGLE), tok)


def test_text_record_is_text_plus_eos_all_trained(tok):
    ex = render(rec(text="hello world"), tok)
    assert ex.input_ids == [28120, 905, 2]
    assert ex.labels == ex.input_ids
    tok.add_bos_token = True
    ex = render(rec(text="hello world"), tok)
    assert ex.input_ids == [1, 28120, 905, 2] and ex.labels == [-100, 28120, 905, 2]


def test_truncate_keeps_prefix_and_drop_returns_none(tok):
    full = render(rec(MULTI), tok)
    n = len(full.input_ids)
    cut = render(rec(MULTI), tok, max_length=n - 6)
    assert cut.truncated and cut.input_ids == full.input_ids[: n - 6] and cut.labels == full.labels[: n - 6]
    assert trained_text(cut, tok) == "answer1<|im_end|>"
    assert render(rec(MULTI), tok, max_length=n - 6, overlong="drop") is None
    assert render(rec(MULTI), tok, max_length=n, overlong="drop").input_ids == full.input_ids


def test_empty_mask_raises_with_row(tok):
    with pytest.raises(EmptyMaskError, match=r"data\.jsonl:7.*no trained tokens"):
        render(rec(SINGLE), tok, max_length=20)  # truncation cuts the whole answer


def test_non_prefix_stable_template_raises(bare):
    # the end marker goes on the last message only, so a shorter render is not a prefix of the full one
    bare.chat_template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if loop.last %} <END>{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(TunesmithError, match="prefix-stable.*train_on: everything"):
        render(rec(SINGLE), bare)
    assert render(rec(SINGLE), bare, train_on="everything") is not None


def test_token_straddling_answer_edge_raises(bare):
    # generation prompt "A" + answer "nswer" tokenise as one token "Answer": no clean boundary
    bare.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}Q {{ m.content }}\n{% else %}A{{ m.content }}"
        "{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}A{% endif %}"
    )
    bad = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "nswer"}]
    with pytest.raises(BoundaryError, match=r"data\.jsonl:7.*straddles"):
        render(rec(bad), bare)


def test_template_exception_names_the_row(tok):
    tok.chat_template = "{{ raise_exception('System role not supported') }}"
    with pytest.raises(DataError, match=r"data\.jsonl:7.*System role not supported"):
        render(rec(SINGLE), tok)


def test_render_prompt_plus_answer_equals_training_ids(tok):
    """Inference prompt + the trained answer tokens (+ the masked newline) == the training row."""
    single = render(rec(SINGLE), tok)
    assert render_prompt(SINGLE[:1], tok) + [36, 2, 198] == single.input_ids
    multi = render(rec(MULTI), tok, train_on="last_assistant")
    answer = [lab for lab in multi.labels if lab != -100]
    assert tok.decode(answer) == "answer2<|im_end|>"
    assert render_prompt(MULTI[:3], tok) + answer + [198] == multi.input_ids


def test_stop_token_ids(tok, bare):
    assert stop_token_ids(tok) == [2]  # eos is <|im_end|> already
    tok.eos_token = "<|endoftext|>"
    assert stop_token_ids(tok) == [0, 2]  # eos plus the ChatML end-of-turn token
    resolve_template(bare, "alpaca")
    assert stop_token_ids(bare) == [2]
