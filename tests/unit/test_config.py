"""Config loading: YAML + overrides -> RunConfig, and the error messages people see when they get it wrong."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from tunesmith.config.load import describe_fields, dump_config, load_config, parse_override
from tunesmith.config.schema import RunConfig
from tunesmith.errors import TunesmithError

GOOD = """\
model:
  name_or_path: some/folder
  dtype: fp32
method:
  kind: lora
  lora:
    r: 8
    targets: [q_proj, v_proj]
data:
  train: train.jsonl
  eval: [a.jsonl, {path: b.jsonl, format: alpaca}]
train:
  lr: 1e-4
  batch_size: 4
output:
  dir: runs/x
"""


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(TunesmithError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


def test_good_yaml_loads(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.model.name_or_path == "some/folder"
    assert cfg.model.dtype == "fp32"
    assert cfg.method.lora.r == 8 and cfg.method.lora.targets == ["q_proj", "v_proj"]
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 4
    assert [s.path for s in cfg.data.train] == ["train.jsonl"]
    assert [(s.path, s.format) for s in cfg.data.eval] == [("a.jsonl", "auto"), ("b.jsonl", "alpaca")]
    assert cfg.train.epochs == 1.0  # untouched default


def test_no_file_gives_defaults():
    assert load_config(None) == RunConfig()


def test_overrides_nested_lists_numbers_bools(tmp_path):
    cfg = load_config(
        write(tmp_path, GOOD),
        [
            "train.lr=3e-5",
            "train.batch_size=16",
            "train.group_by_length=false",
            "method.lora.targets=[k_proj,o_proj]",
            "method.lora.dora=true",
            "data.train=[{path: x.jsonl, format: sharegpt}]",
            "model.adapter=runs/sft/adapter",
            "train.betas=[0.8, 0.95]",
        ],
    )
    assert cfg.train.lr == 3e-5
    assert cfg.train.batch_size == 16
    assert cfg.train.group_by_length is False
    assert cfg.method.lora.targets == ["k_proj", "o_proj"]
    assert cfg.method.lora.dora is True
    assert [(s.path, s.format) for s in cfg.data.train] == [("x.jsonl", "sharegpt")]
    assert cfg.model.adapter == "runs/sft/adapter"
    assert cfg.train.betas == (0.8, 0.95)
    assert cfg.method.lora.r == 8  # the file's value survives a sibling override


def test_override_creates_missing_sections_and_later_wins():
    cfg = load_config(None, ["method.freeze.top_k_layers=2", "method.kind=freeze", "method.freeze.top_k_layers=3"])
    assert cfg.method.kind == "freeze" and cfg.method.freeze.top_k_layers == 3


def test_override_string_shorthand_for_data():
    cfg = load_config(None, ["data.train=[a.jsonl, b.jsonl]", "data.eval=c.jsonl"])
    assert [s.path for s in cfg.data.train] == ["a.jsonl", "b.jsonl"]
    assert [s.path for s in cfg.data.eval] == ["c.jsonl"]


def test_override_without_equals_is_an_error():
    msg = error_of(None, ["train.lr"])
    assert "train.lr" in msg and "key.path=value" in msg


def test_parse_override_values():
    assert parse_override("a.b=1e-4") == (["a", "b"], 1e-4)
    assert parse_override("a=yes") == (["a"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert parse_override("a=") == (["a"], None)


def test_override_into_a_value_is_an_error():
    msg = error_of(None, ["train.lr=1", "train.lr.x=2"])
    assert "'train.lr' is a value" in msg


def test_unknown_top_level_key_suggests(tmp_path):
    msg = error_of(write(tmp_path, "trian:\n  lr: 1.0\n"))
    assert "config.yaml:1: trian: unknown key — did you mean 'train'?" in msg


def test_unknown_nested_key_suggests(tmp_path):
    msg = error_of(write(tmp_path, "model:\n  dtype: bf16\ntrain:\n  learning_rate: 1e-4\n"))
    assert "config.yaml:4: train.learning_rate: unknown key — did you mean 'train.lr'?" in msg
    msg = error_of(write(tmp_path, "method:\n  lora:\n    rnak: 4\n"))
    assert "config.yaml:3: method.lora.rnak: unknown key — did you mean 'method.lora.r'?" in msg


def test_unknown_key_inside_list_item_and_wrong_section(tmp_path):
    msg = error_of(write(tmp_path, "data:\n  train:\n    - paht: a.jsonl\ntrain:\n  dtype: fp32\n"))
    assert "data.train[0].paht: unknown key — did you mean 'data.train[0].path'?" in msg
    assert "data.train[0].path: required key missing" in msg
    assert "train.dtype: unknown key here — 'dtype' belongs in 'model.dtype'" in msg


def test_unknown_key_from_override_names_the_override():
    msg = error_of(None, ["train.learning_rate=0.1"])
    assert "override 'train.learning_rate=0.1': train.learning_rate: unknown key — did you mean 'train.lr'?" in msg


def test_wrong_type_names_key_expected_type_and_value(tmp_path):
    msg = error_of(write(tmp_path, "train:\n  batch_size: many\nmodel:\n  dtype: fp16\n"))
    assert "invalid config (2 problems)" in msg
    assert "config.yaml:2: train.batch_size: Input should be a valid integer" in msg and "(got 'many')" in msg
    assert "config.yaml:4: model.dtype: Input should be 'auto', 'bf16' or 'fp32' (got 'fp16')" in msg
    msg = error_of(None, ["method.lora.targets=5"])
    assert "method.lora.targets: expected str or list[str], got 5" in msg
    msg = error_of(None, ["train.lr=-1"])
    assert "train.lr: Input should be greater than 0 (got -1)" in msg


def test_missing_file(tmp_path):
    msg = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_bad_yaml_names_file_and_line(tmp_path):
    msg = error_of(write(tmp_path, "train:\n  lr: 1\n  batch_size: [1, 2\nmodel: {}\n"))
    assert "config.yaml:" in msg and "invalid YAML" in msg
    line = int(msg.split("config.yaml:")[1].split(":")[0])
    assert line in (3, 4)  # the unclosed list: reported where the parser notices it


def test_top_level_not_a_mapping(tmp_path):
    assert "must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_empty_file_is_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == RunConfig()


def test_dump_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["method.lora.dora=true"])
    text = dump_config(cfg)
    assert "lr: 0.0001" in text and "name_or_path: some/folder" in text
    assert load_config(write(tmp_path, text, "dumped.yaml")) == cfg


def _walk_models(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, info.description))
        for arg in [info.annotation, *typing.get_args(info.annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out.extend(_walk_models(arg, f"{prefix}{name}."))
    return out


def test_every_field_has_a_description():
    fields = _walk_models(RunConfig)
    assert len(fields) > 40
    missing = [key for key, desc in fields if not (desc or "").strip()]
    assert missing == []


def test_describe_fields_rows():
    rows = {row[0]: row for row in describe_fields()}
    assert rows["train.lr"] == ("train.lr", "float", "0.0002", "peak learning rate")
    assert rows["model.dtype"][1:3] == ("'auto' | 'bf16' | 'fp32'", "auto")
    assert rows["data.train[].path"][2] == "required"
    assert rows["method.lora.targets"][1:3] == ("str | list[str]", "all-linear")
    assert "method.lora" not in rows and "train" not in rows  # sections are expanded, not listed
    assert all(desc for _, _, _, desc in rows.values())
