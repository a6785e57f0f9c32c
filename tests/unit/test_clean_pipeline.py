"""clean: a recipe of stages on a planted chat file; every row is kept, changed or accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.data.clean.pipeline import clean_file, load_recipe, parse_recipe
from tunesmith.errors import DataError, TunesmithError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CHAT = ASSETS / "dq_chat.jsonl"


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]


def test_default_recipe_on_planted_chat_file(tmp_path):
    stats = clean_file(CHAT, tmp_path / "out.jsonl")
    removed = {r["line"]: (r["stage"], r["reason"]) for r in _jsonl(tmp_path / "out.removed.jsonl")}
    assert removed == {
        2: ("exact_dedup", "exact duplicate (pair)"), 4: ("quality", "empty answer"), 5: ("quality", "truncated"),
        6: ("quality", "refusal"), 8: ("quality", "repeats question"), 9: ("quality", "repetitive"),
        10: ("quality", "language mismatch"), 12: ("harmful", "harmful"), 14: ("read", "bad row"),
    }
    kept = _jsonl(tmp_path / "out.jsonl")
    assert [r["messages"][0]["content"] for r in kept] == [
        "What is the capital of France?", "Write a haiku about rain.", "My email is [EMAIL], can you write to me?", "What is 2 + 2?"]
    assert kept[2]["messages"][1]["content"] == "Sure, I will write to [EMAIL] today."
    # accounting: 14 lines = 12 rows in (4 kept + 8 removed) + 1 other-format row (side file) + 1 malformed line
    assert (stats["rows_read"], stats["rows_in"], stats["rows_out"], stats["rows_skipped"]) == (14, 12, 4, 2)
    assert stats["skip_reasons"] == {"malformed json": 1, "bad row": 1}
    by_name = {s["name"]: s for s in stats["stages"]}
    assert by_name["normalize"]["changed"] == 2 and by_name["pii"]["items_found"] == {"email": 2}
    assert by_name["quality"]["removed"] == 6 and by_name["harmful"]["removed"] == 1
    # removed rows are kept as read (line 2 had two spaces before normalisation)
    assert removed and _jsonl(tmp_path / "out.removed.jsonl")[0]["row"]["messages"][0]["content"] == "What  is the capital of France?"
    assert json.loads((tmp_path / "out.stats.json").read_text())["rows_out"] == 4
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["rows"] == 4 and manifest["parents"][0]["path"] == str(CHAT) and manifest["stats"]["rows_in"] == 12


def test_keeps_the_users_format_and_extra_fields(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"instruction": "Say hi\u3000 to  Bob.", "input": "", "output": "Hi Bob!", "meta": {"k": 1}}) + "\n")
    clean_file(src, tmp_path / "o.jsonl")
    assert _jsonl(tmp_path / "o.jsonl") == [{"instruction": "Say hi to Bob.", "input": "", "output": "Hi Bob!", "meta": {"k": 1}}]


def test_recipe_stages_settings_and_repeats(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - exact_dedup: {level: instruction}\n  - exact_dedup: {level: conversation}\n"
                      "  - quality: {min_answer_words: 5, language_mismatch: false}\n")
    stats = clean_file(CHAT, tmp_path / "o.jsonl", load_recipe(recipe))
    assert [s["name"] for s in stats["stages"]] == ["exact_dedup#0", "exact_dedup#1", "quality"]
    assert stats["stages"][2]["reasons"]["too short"] == 2  # "Two, three and" is caught first as too short; 2+2 answer has 4 words


@pytest.mark.parametrize("data, message", [
    ({"stages": ["dedupe"]}, "unknown stage 'dedupe' (did you mean"),
    ({"stages": [{"near_dedup": {"treshold": 0.5}}]}, "stages[0] (near_dedup).treshold: Extra inputs are not permitted"),
    ({"stages": [{"near_dedup": {"threshold": 1.5}}]}, "stages[0] (near_dedup).threshold"),
    ({"stages": [{"pii": {"kinds": ["ssn"]}}]}, "unknown PII kind(s) ['ssn']"),
    ({"stagez": []}, "recipe stagez: Extra inputs are not permitted"),
    ({"stages": [{"exact_dedup": {"level": "token"}}]}, "stages[0] (exact_dedup).level"),
])
def test_bad_recipes_are_rejected_with_the_stage_and_key(data, message):
    with pytest.raises(TunesmithError) as e:
        parse_recipe(data)
    assert message in str(e.value)


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        clean_file(tmp_path / "missing.jsonl", tmp_path / "o.jsonl")
    with pytest.raises(DataError, match="no usable rows .* cannot tell the data format"):
        clean_file(ASSETS / "fmt_qa.csv", tmp_path / "o.jsonl")
    with pytest.raises(TunesmithError, match="name it .jsonl"):
        clean_file(CHAT, tmp_path / "o.parquet")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9 ol\xe9"}\n{"text": "fine row here"}\n')
    stats = clean_file(latin, tmp_path / "o.jsonl")
    assert stats["skip_reasons"] == {"not utf-8": 1} and stats["rows_out"] == 1


def test_cli_clean(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [normalize, pii]\n")
    main(["data", "clean", str(CHAT), "-o", str(tmp_path / "o.jsonl"), "--recipe", str(recipe)])
    out = capsys.readouterr().out
    assert "12 rows in, 12 out" in out and "pii: email" in out
    recipe.write_text("stages: [nope]\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "clean", str(CHAT), "-o", str(tmp_path / "o.jsonl"), "--recipe", str(recipe)])
    assert e.value.code == 2 and "unknown stage 'nope'" in capsys.readouterr().err
