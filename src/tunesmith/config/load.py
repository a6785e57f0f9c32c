"""Load a run config: YAML file + `a.b=c` overrides -> validated `RunConfig`, with errors a person can act on.

Relative paths in the config (data files, output dir, model folder) are kept as written and therefore
resolve against the current working directory when they are used, not against the YAML file's folder.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from tunesmith.config.schema import RunConfig
from tunesmith.errors import TunesmithError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` (no dot) as a float, as people write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

# Names other trainers use for our fields: a user coming from TRL / LLaMA-Factory gets pointed home.
_ALIASES = {
    "learning_rate": "lr", "gradient_accumulation_steps": "grad_accum", "per_device_train_batch_size": "batch_size",
    "num_train_epochs": "epochs", "warmup": "warmup_ratio", "lr_scheduler_type": "scheduler",
    "lora_r": "r", "rank": "r", "lora_rank": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "target_modules": "targets", "lora_target": "targets", "use_rslora": "rslora", "use_dora": "dora",
    "output_dir": "dir", "model_name_or_path": "name_or_path", "torch_dtype": "dtype", "path": "name_or_path",
    "cutoff_len": "max_length", "max_seq_length": "max_length", "max_seq_len": "max_length", "finetuning_type": "kind",
    "dataset": "train", "train_file": "train", "file": "path",
}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TunesmithError(f"config file '{path}' not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TunesmithError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunesmithError(f"{path}: the config must be a mapping of sections (model:, method:, ...), got {type(data).__name__}")
    return data


def _key_lines(path: Path | None) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key in the YAML file, by key path (for error messages)."""
    lines: dict[tuple[str, ...], int] = {}
    if path is None:
        return lines
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                keypath = prefix + (str(key.value),)
                lines[keypath] = key.start_mark.line + 1
                walk(value, keypath)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, prefix + (str(i),))

    if root is not None:
        walk(root, ())
    return lines


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001); the value is read as YAML (numbers, bools, lists, maps)."""
    if "=" not in text:
        raise TunesmithError(f"override '{text}' must look like key.path=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise TunesmithError(f"override '{text}': empty key path")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise TunesmithError(f"override '{text}': value is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parts, value


def _apply_override(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TunesmithError(f"override '{text}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _expand_shorthand(data: dict[str, Any]) -> None:
    """`data.train: a.jsonl` or `[a.jsonl, b.jsonl]` -> `[{path: a.jsonl}, ...]` (same for data.eval)."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for split in ("train", "eval"):
        value = section.get(split)
        if isinstance(value, str):
            section[split] = [{"path": value}]
        elif isinstance(value, list):
            section[split] = [{"path": v} if isinstance(v, str) else v for v in value]


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> RunConfig:
    """Read `path` (None = all defaults), apply `a.b=c` overrides in order, validate against `RunConfig`.

    Raises TunesmithError listing every problem as `file:line: key.path: message`.
    """
    file = Path(path) if path is not None else None
    data = _read_yaml(file) if file is not None else {}
    from_override: dict[tuple[str, ...], str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value, text)
        from_override[tuple(parts)] = text
    _expand_shorthand(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        source = str(file) if file is not None else "config"
        problems = _format_errors(exc, source, _key_lines(file), from_override)
        noun = "problem" if len(problems) == 1 else "problems"
        raise TunesmithError(f"invalid config ({len(problems)} {noun}):\n" + "\n".join(f"  {p}" for p in problems)) from None


# ---------------------------------------------------------------- error formatting


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `X`, `list[X]` or `X | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _resolve_loc(loc: tuple[Any, ...]) -> tuple[tuple[str, ...], list[str], type[BaseModel] | None]:
    """Split a pydantic error location into (key path, union-branch tags, model owning the last key)."""
    keys: list[str] = []
    tags: list[str] = []
    model: type[BaseModel] | None = RunConfig
    owner: type[BaseModel] | None = RunConfig
    for part in loc:
        if isinstance(part, int):
            keys.append(str(part))
        elif model is not None and part in model.model_fields:
            owner = model
            keys.append(part)
            model = _submodel(model.model_fields[part].annotation)
        elif model is not None and not tags and len(keys) == len(loc) - 1:
            owner = model  # an unknown key (extra_forbidden) at this level
            keys.append(str(part))
        else:
            tags.append(str(part))
    return tuple(keys), tags, owner


def _display(keys: tuple[str, ...]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if k.isdigit() else (f".{k}" if out else k)
    return out


def _all_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, list[str]]:
    """Every leaf field name -> dotted parent sections where it lives (for 'belongs in another section')."""
    out: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        out.setdefault(name, []).append(prefix + name)
        sub = _submodel(info.annotation)
        if sub is not None and typing.get_origin(info.annotation) is not list:
            for k, v in _all_fields(sub, f"{prefix}{name}.").items():
                out.setdefault(k, []).extend(v)
    return out


def suggest_key(unknown: str, owner: type[BaseModel]) -> str | None:
    """The closest valid field name at this level: known aliases, then spelling, then initials (learning_rate->lr)."""
    names = list(owner.model_fields)
    alias = _ALIASES.get(unknown.lower())
    if alias in names:
        return alias
    close = difflib.get_close_matches(unknown.lower(), names, n=1, cutoff=0.6)
    if close:
        return close[0]
    initials = "".join(w[0] for w in re.split(r"[_\-]+", unknown.lower()) if w)
    return initials if initials in names else None


def _unknown_key_message(keys: tuple[str, ...], owner: type[BaseModel] | None) -> str:
    prefix = _display(keys[:-1])
    prefix = prefix + "." if prefix else ""
    guess = suggest_key(keys[-1], owner) if owner is not None else None
    if guess:
        return f"unknown key — did you mean '{prefix}{guess}'?"
    elsewhere = _all_fields().get(keys[-1])
    if elsewhere:
        return f"unknown key here — '{keys[-1]}' belongs in '{elsewhere[0]}'"
    valid = ", ".join(owner.model_fields) if owner is not None else ""
    return f"unknown key (valid keys: {valid})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _where(keys: tuple[str, ...], source: str, lines: dict, overrides: dict) -> str:
    for n in range(len(keys), 0, -1):
        if keys[:n] in overrides:
            return f"override '{overrides[keys[:n]]}'"
    for n in range(len(keys), 0, -1):
        if keys[:n] in lines:
            return f"{source}:{lines[keys[:n]]}"
    return source


def _format_errors(exc: ValidationError, source: str, lines: dict, overrides: dict) -> list[str]:
    grouped: dict[tuple[str, ...], list[tuple[list[str], dict]]] = {}
    owners: dict[tuple[str, ...], type[BaseModel] | None] = {}
    for err in exc.errors():
        keys, tags, owner = _resolve_loc(tuple(err["loc"]))
        grouped.setdefault(keys, []).append((tags, err))
        owners[keys] = owner
    problems = []
    for keys, errs in grouped.items():
        first = errs[0][1]
        if first["type"] == "extra_forbidden":
            message = _unknown_key_message(keys, owners[keys])
        elif first["type"] == "missing":
            message = "required key missing"
        elif len(errs) > 1 and all(tags for tags, _ in errs):
            kinds = " or ".join(dict.fromkeys(tags[0] for tags, _ in errs))
            message = f"expected {kinds}, got {_short(first['input'])}"
        else:
            message = "; ".join(dict.fromkeys(e["msg"] for _, e in errs)) + f" (got {_short(first['input'])})"
        problems.append(f"{_where(keys, source, lines, overrides)}: {_display(keys) or '<top>'}: {message}")
    return problems


# ---------------------------------------------------------------- dump and docs


def dump_config(cfg: RunConfig) -> str:
    """YAML text of the full resolved config (every field, defaults included); `load_config` reads it back."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return yaml.safe_dump(value if not isinstance(value, tuple) else list(value), default_flow_style=True).strip().removesuffix("\n...").strip()


def describe_fields(model_cls: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, type, default, description) for every field, sections expanded; list items as `key[]`."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model_cls.model_fields.items():
        key = prefix + name
        sub = _submodel(info.annotation)
        if sub is not None and typing.get_origin(info.annotation) is not list:
            rows.extend(describe_fields(sub, key + "."))
            continue
        rows.append((key, _type_name(info.annotation), _default_text(info), info.description or ""))
        if sub is not None:
            rows.extend(describe_fields(sub, key + "[]."))
    return rows
