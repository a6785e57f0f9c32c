"""Reward sources (training/rewards.py) and prompt-only data (data/prompts.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tunesmith.config.schema import DataConfig, DataSource
from tunesmith.data.prompts import load_prompts
from tunesmith.errors import DataError, SkipReport, TunesmithError
from tunesmith.training.rewards import (FunctionReward, ModelReward, RewardSource, RewardStats, json_fields,
                                        resolve_reward_function)

TARGET = {"name": "Ada Lovelace", "party_size": 4, "date": "2026-03-03", "time": "19:30", "restaurant": "Fjord"}


def test_json_fields_verifier_pinned():
    row = {"target": TARGET}
    assert json_fields(json.dumps(TARGET), row) == pytest.approx(1.0)
    assert json_fields("Sure! Here it is", row) == 0.0
    wrong_type = dict(TARGET, party_size="4")  # "4" is not 4: 4 of 5 fields right
    assert json_fields(json.dumps(wrong_type), row) == pytest.approx(0.2 + 0.8 * 4 / 5)
    extra = dict(TARGET, note="x")  # all right, one extra key of six
    assert json_fields("```json\n" + json.dumps(extra) + "\n```", row) == pytest.approx(1.0 - 0.2 / 6)
    with pytest.raises(ValueError):
        json_fields("{}", {})


def _raises(completion, row):
    raise RuntimeError("boom")


def test_failing_reward_functions_are_counted_and_get_the_fallback():
    values = iter([1.5, "high", float("nan"), None, True, torch.tensor(0.25)])
    stats = RewardStats()
    scores, failed = FunctionReward("odd", lambda c, r: next(values), fallback=-1.0).score(["a"] * 6, [{}] * 6, stats)
    assert scores.tolist() == [1.5, -1.0, -1.0, -1.0, -1.0, 0.25]
    assert failed.tolist() == [False, True, True, True, True, False]
    scores, failed = FunctionReward("boom", _raises).score(["a", "b"], [{}, {}], stats)
    assert scores.tolist() == [0.0, 0.0] and failed.all()
    assert stats.failures == {"odd": 4, "boom": 2}
    assert "RuntimeError: boom" in stats.summary() or "not a number" in stats.summary()
    source = RewardSource([FunctionReward("len", lambda c, r: len(c)), FunctionReward("boom", _raises, fallback=0.5)])
    total, failed = source.score(["ab", "abcd"], [{}, {}], [[], []])
    assert total.tolist() == [2.5, 4.5] and failed.all() and source.stats.calls == 2


def test_resolve_reward_function_builtin_module_and_file(tmp_path, monkeypatch):
    assert resolve_reward_function("json_fields") is json_fields
    (tmp_path / "my_rewards.py").write_text("def short(completion, row):\n    return -len(completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_reward_function("my_rewards:short")("abc", {}) == -3
    assert resolve_reward_function(f"{tmp_path / 'my_rewards.py'}:short")("ab", {}) == -2
    with pytest.raises(TunesmithError, match="unknown reward 'json_feilds'"):
        resolve_reward_function("json_feilds")
    with pytest.raises(TunesmithError, match="has no function 'long'"):
        resolve_reward_function("my_rewards:long")
    with pytest.raises(TunesmithError, match="cannot import 'no_such_module_xyz'"):
        resolve_reward_function("no_such_module_xyz:f")
    with pytest.raises(TunesmithError, match="not found"):
        resolve_reward_function(f"{tmp_path / 'missing.py'}:f")
    with pytest.raises(TunesmithError, match="needs a reward"):
        RewardSource([])


def test_reward_model_folder_scores_the_rendered_conversation_at_the_last_token(tmp_path, tiny_model_dir, tokenizer):
    from tunesmith.config.schema import ModelConfig
    from tunesmith.data.collate import pad_batch
    from tunesmith.data.formats import Record
    from tunesmith.data.templates import render, resolve_template
    from tunesmith.models.heads import attach_head, reward_scores, save_head
    from tunesmith.models.load import load_model

    folder = tmp_path / "rm"
    shutil.copytree(tiny_model_dir, folder)
    model = load_model(ModelConfig(name_or_path=str(folder), dtype="fp32"))
    attach_head(model, seed=3)
    save_head(model, folder)
    resolve_template(tokenizer, "auto")
    rm = ModelReward(str(folder), str(folder), tokenizer)
    prompts = [[{"role": "user", "content": "Colour of grass?"}], [{"role": "user", "content": "2 + 2?"}]]
    got = rm.score(["Green.", "Four, I think."], prompts)
    rows = [render(Record(messages=p + [{"role": "assistant", "content": a}]), tokenizer, "last_assistant")
            for p, a in zip(prompts, ["Green.", "Four, I think."])]
    batch = pad_batch(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        want = reward_scores(model.eval(), batch["input_ids"], batch["attention_mask"])
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-5) and got[0] != got[1]
    with pytest.raises(TunesmithError, match="no reward_head"):
        ModelReward(str(tiny_model_dir), str(tiny_model_dir), tokenizer)


def test_prompt_rows_load_with_rows_kept_and_bad_rows_named(tmp_path, tokenizer):
    from tunesmith.data.templates import render_prompt, resolve_template

    resolve_template(tokenizer, "auto")
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Hi there", "target": {"a": 1}},
            {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "reference"}]},
            {"prompt": ""},
            {"question": "no prompt field"},
            {"prompt": "word " * 300}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"prompts.jsonl:3: field 'prompt'"):
        load_prompts([DataSource(path=str(path))], tokenizer, DataConfig(), SkipReport(), 200)
    report = SkipReport()
    items = load_prompts([DataSource(path=str(path))], tokenizer, DataConfig(on_error="skip"), report, 200)
    assert [i.line for i in items] == [1, 2]
    assert items[0].row["target"] == {"a": 1} and items[0].ids == render_prompt([{"role": "user", "content": "Hi there"}], tokenizer)
    assert items[1].messages == [{"role": "user", "content": "Q?"}]  # the reference answer is left out
    assert report.reasons == {"bad prompt row": 2, "prompt too long": 1} and report.kept == 2 and report.total == 5
    with pytest.raises(DataError, match="format must be one of"):
        load_prompts([DataSource(path=str(path), format="alpaca")], tokenizer, DataConfig(), SkipReport(), 200)
