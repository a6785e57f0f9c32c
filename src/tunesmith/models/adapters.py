"""What gets trained: LoRA / DoRA adapters (via peft), QLoRA (LoRA on a 4-bit base, models/quantize.py), all
weights, or selected modules; adapter save/load; a report.

Precision policy: frozen base weights keep the dtype they were loaded in (`model.dtype`, often bf16);
every trainable parameter is fp32 (master weights), so optimizer updates are not lost to bf16 rounding.
For "full" that means the whole model becomes fp32 and, by default, computes in fp32 too: every update reaches
the forward pass. With `method.mixed_precision` a model loaded in bf16 (`model.dtype` bf16, or auto where bf16 is
native) keeps bf16 as its compute dtype: the loop runs it under bf16 autocast (as transformers' Trainer with
`bf16=True`), so its matmuls run at the bf16 rate but an update below a weight's bf16 step shows in the forward
pass only when it crosses a rounding boundary. For "freeze" on a bf16 base, the modules holding
trainable weights get hooks that cast their inputs to fp32 and their outputs back to the base dtype,
so the model runs with or without `torch.autocast`. peft does the same casting inside LoRA layers.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.config.schema import FreezeConfig, LoraConfig, MethodConfig
from tunesmith.errors import TunesmithError
from tunesmith.objectives.base import unwrap

_ADAPTER_WEIGHTS = "adapter_model.safetensors"
COMPUTE_DTYPE_ATTR = "tunesmith_compute_dtype"  # set on fully trained models: the dtype their matmuls run in


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model's matmuls run in: what `apply_method` recorded for full fine-tuning (its fp32 master
    weights run under autocast when loaded in bf16), else bf16 when any weight is bf16, else fp32."""
    recorded = getattr(unwrap(model), COMPUTE_DTYPE_ATTR, None)
    if recorded is not None:
        return recorded
    return torch.bfloat16 if any(p.dtype == torch.bfloat16 for p in model.parameters()) else torch.float32


def apply_method(model: nn.Module, method: MethodConfig) -> nn.Module:
    """Make exactly the parameters `method` asks for trainable (fp32); returns the model to train."""
    if method.mixed_precision and method.kind != "full":
        raise TunesmithError(f"method.mixed_precision applies to kind full only (kind here: {method.kind}); adapters "
                             "on a bf16 base already compute in bf16")
    if method.kind == "lora":
        return _apply_lora(model, method.lora)
    if method.kind == "qlora":
        return _apply_qlora(model, method.lora)
    if method.kind == "full":
        loaded = next(model.parameters()).dtype
        model.float()  # fp32 master weights for everything
        model.requires_grad_(True)
        setattr(model, COMPUTE_DTYPE_ATTR, loaded if method.mixed_precision else torch.float32)
        return model
    if method.kind == "freeze":
        return _apply_freeze(model, method.freeze)
    raise TunesmithError(f"method.kind: unknown method '{method.kind}' (use lora, qlora, full or freeze)")


def _trainables_to_fp32(model: nn.Module) -> None:
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _check_targets(model: nn.Module, targets: list[str]) -> None:
    """Every LoRA target must name at least one module (peft only complains when none matches)."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in _linear_names(model)})
        raise TunesmithError(
            f"method.lora.targets: {missing} match no module in this model; its linear layers are {leaves} "
            "(or use targets: all-linear)"
        )


def _apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    if isinstance(cfg.targets, list):
        _check_targets(model, cfg.targets)
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.targets,
        use_rslora=cfg.rslora,
        use_dora=cfg.dora,
        task_type=TaskType.CAUSAL_LM,
    )
    try:
        peft_model = get_peft_model(model, peft_cfg, autocast_adapter_dtype=True)
    except ValueError as exc:
        raise TunesmithError(f"method.lora: could not add LoRA adapters: {exc}") from exc
    _trainables_to_fp32(peft_model)
    return peft_model


def _apply_qlora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """QLoRA (Dettmers et al. 2023): fp32 LoRA adapters on a base whose linear layers are already 4-bit.

    Deliberately not peft's `prepare_model_for_kbit_training`: it would upcast every unquantised weight
    (embeddings, norms, lm_head) to fp32, against `model.dtype`, and force gradient checkpointing on, which is
    `train.gradient_checkpointing`'s call. What remains of it is already done: peft freezes the base, and
    transformers' checkpointing makes the (frozen) embedding output require grad when it is switched on."""
    from tunesmith.models.quantize import is_quantized

    if not is_quantized(model):
        raise TunesmithError(
            "method.kind: qlora needs a 4-bit base: load it with load_model(cfg.model, cfg.method.qlora) "
            "(training.run.build_model does)"
        )
    return _apply_lora(model, cfg)


def find_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The transformer blocks: the first ModuleList whose length is config.num_hidden_layers."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(getattr(config, "text_config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def _freeze_selection(model: nn.Module, cfg: FreezeConfig) -> set[str]:
    """Names of the parameters `cfg` selects for training (errors name what matched nothing)."""
    names = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in cfg.trainable_modules:
        hits = [n for n in names if pattern in n]
        if not hits:
            raise TunesmithError(
                f"method.freeze.trainable_modules: '{pattern}' matches no parameter name "
                f"(names look like {names[min(3, len(names) - 1)]!r}, {names[-1]!r})"
            )
        chosen.update(hits)
    if cfg.top_k_layers:
        blocks = find_blocks(model)
        if blocks is None:
            raise TunesmithError("method.freeze.top_k_layers: could not find the transformer blocks in this model")
        if cfg.top_k_layers > len(blocks):
            raise TunesmithError(f"method.freeze.top_k_layers={cfg.top_k_layers} but the model has {len(blocks)} blocks")
        ids = {id(p) for block in blocks[-cfg.top_k_layers :] for p in block.parameters()}
        chosen.update(n for n, p in model.named_parameters() if id(p) in ids)
    if cfg.train_lm_head:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise TunesmithError("method.freeze.train_lm_head: this model has no output head")
        ids = {id(p) for p in head.parameters()}  # tied input embeddings share the same Parameter
        chosen.update(n for n, p in model.named_parameters() if id(p) in ids)
    return chosen


def _apply_freeze(model: nn.Module, cfg: FreezeConfig) -> nn.Module:
    chosen = _freeze_selection(model, cfg)
    if not chosen:
        raise TunesmithError(
            "method.freeze: nothing would be trained — set trainable_modules (name substrings, e.g. [mlp]), "
            "top_k_layers (e.g. 2) or train_lm_head: true"
        )
    base_dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for name in chosen:
        params[name].requires_grad_(True)
    owners = {name: m for name, m in model.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False))}
    for module in owners.values():
        for p in module.parameters(recurse=False):  # a module computes in one dtype: its frozen siblings go fp32 too
            p.data = p.data.float()
        if base_dtype != torch.float32:
            _add_cast_hooks(module, base_dtype)
    return model


def _cast_floats(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)) and not hasattr(obj, "_fields"):
        return type(obj)(_cast_floats(x, dtype) for x in obj)
    return obj


def _add_cast_hooks(module: nn.Module, base_dtype: torch.dtype) -> None:
    """fp32 module inside a lower-precision model: inputs -> fp32, outputs -> base dtype."""

    def before(_m, args, kwargs):
        return _cast_floats(args, torch.float32), {k: _cast_floats(v, torch.float32) for k, v in kwargs.items()}

    def after(_m, _args, output):
        return _cast_floats(output, base_dtype)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after)


# ---------------------------------------------------------------- save / load


def save_adapter(model: nn.Module, out_dir: str | Path) -> Path:
    """LoRA: the adapter only (adapter_config.json + adapter_model.safetensors, loadable by plain peft).
    Full / freeze: the whole model as an HF folder (safetensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out


def _base_module(model: nn.Module) -> nn.Module:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def _adapter_shapes(weights: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """{module name in the base model: {'A': shape, 'B': shape}} from a saved peft adapter."""
    from safetensors import safe_open

    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            for part in ("A", "B"):
                suffix = f".lora_{part}.weight"
                if key.endswith(suffix):
                    module = key[: -len(suffix)].removeprefix("base_model.model.")
                    shapes.setdefault(module, {})[part] = tuple(f.get_slice(key).get_shape())
    return shapes


def _shape_problem(name: str, shape: dict[str, tuple[int, ...]], module: nn.Module | None) -> str | None:
    if module is None:
        return f"it has weights for '{name}', which this model lacks"
    want = (getattr(module, "in_features", None), getattr(module, "out_features", None))
    if None in want:
        return None  # not a Linear (e.g. an embedding): peft checks those itself
    got = (shape["A"][1] if "A" in shape else want[0], shape["B"][0] if "B" in shape else want[1])
    if got == want:
        return None
    return f"'{name}' is {want[0]}->{want[1]} in the model but {got[0]}->{got[1]} in the adapter"


def check_adapter_fits(model: nn.Module, adapter_dir: str | Path) -> dict:
    """Read the adapter's config and tensor shapes and compare them with `model`; raise a clear error on mismatch."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise TunesmithError(f"adapter folder '{folder}' not found")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise TunesmithError(f"'{folder}' is not a LoRA adapter folder: adapter_config.json is missing")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunesmithError(f"{config_file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    weights = folder / _ADAPTER_WEIGHTS
    if not weights.is_file():
        raise TunesmithError(f"'{folder}' has no {_ADAPTER_WEIGHTS} (adapter weights)")
    base = _base_module(model)
    modules = dict(base.named_modules())
    try:
        shapes = _adapter_shapes(weights)
    except Exception as exc:  # safetensors raises its own error type for corrupt / truncated files
        raise TunesmithError(f"cannot read adapter weights '{weights}': {exc}") from None
    adapter_hidden = Counter(s["A"][1] for s in shapes.values() if "A" in s).most_common(1)
    model_name = getattr(getattr(base, "config", None), "_name_or_path", "") or type(base).__name__
    model_hidden = getattr(getattr(base, "config", None), "hidden_size", "?")
    trained_for = config.get("base_model_name_or_path") or "an unknown base"
    order = {name: i for i, name in enumerate(modules)}
    problems = []
    for name in sorted(shapes, key=lambda n: order.get(n, len(order))):  # report in model order
        problem = _shape_problem(name, shapes[name], modules.get(name))
        if problem:
            problems.append(problem)
    if problems:
        hidden = adapter_hidden[0][0] if adapter_hidden else "?"
        more = f" (and {len(problems) - 1} more modules differ)" if len(problems) > 1 else ""
        raise TunesmithError(
            f"adapter '{folder}' was trained for base '{trained_for}' (hidden {hidden}) but the model is "
            f"'{model_name}' (hidden {model_hidden}): {problems[0]}{more}. Load the base model it was trained on."
        )
    return config


def load_adapter(model: nn.Module, adapter_dir: str | Path, trainable: bool, adapter_name: str = "default") -> nn.Module:
    """Attach a saved LoRA adapter to `model` (checked first); `trainable` makes its weights train (fp32)."""
    from peft import PeftModel

    check_adapter_fits(model, adapter_dir)
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)
        else:
            model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise TunesmithError(f"could not load adapter '{adapter_dir}': {exc}") from exc
    if trainable:
        _trainables_to_fp32(model)
    return model


# ---------------------------------------------------------------- report


def _method_text(model: nn.Module, trainable: int, total: int) -> str:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from tunesmith.models.quantize import describe

    quant = describe(model)
    if isinstance(model, PeftModel):
        cfg = model.peft_config[model.active_adapter]
        kind = "dora" if getattr(cfg, "use_dora", False) else str(cfg.peft_type.value).lower()
        kind = ("q" + kind) if quant else kind
        n = sum(1 for m in model.modules() if isinstance(m, LoraLayer))
        extra = " rslora" if getattr(cfg, "use_rslora", False) else ""
        return f"{kind} r={getattr(cfg, 'r', '?')}{extra} on {n} modules" + (f"; {quant}" if quant else "")
    if quant:
        return f"frozen {quant}" if trainable == 0 else f"{trainable} trainable on a {quant}"
    if trainable == total:
        return "full"
    if trainable == 0:
        return "frozen"
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    return f"freeze: {tensors} tensors train"


def trainable_report(model: nn.Module) -> dict:
    """Counts of all / trainable parameters (shared tensors once), per-dtype counts, and the method in words.

    A packed 4-bit weight counts the weights it stands for (2 per byte), under its 4-bit type (e.g. 'nf4')."""
    from tunesmith.models.quantize import is_4bit_param, logical_numel

    total = trainable = 0
    dtypes: dict[str, int] = {}
    trainable_dtypes: dict[str, int] = {}
    for p in model.parameters():  # parameters() yields a tied tensor once
        n, d = logical_numel(p), str(p.dtype).removeprefix("torch.")
        if is_4bit_param(p):
            d = getattr(p, "quant_type", "4bit")
        total += n
        dtypes[d] = dtypes.get(d, 0) + n
        if p.requires_grad:
            trainable += n
            trainable_dtypes[d] = trainable_dtypes.get(d, 0) + n
    return {
        "total": total,
        "trainable": trainable,
        "percent": 100.0 * trainable / total if total else 0.0,
        "dtypes": dtypes,
        "trainable_dtypes": trainable_dtypes,
        "method": _method_text(model, trainable, total),
    }


def _human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"
    return str(int(n))


def format_trainable_report(report: dict) -> str:
    """One line, e.g. 'trainable 1.84M / 136.4M (1.35%) — lora r=16 on 210 modules'."""
    line = f"trainable {_human(report['trainable'])} / {_human(report['total'])} ({report['percent']:.2f}%)"
    return line + (f" — {report['method']}" if report.get("method") else "")
