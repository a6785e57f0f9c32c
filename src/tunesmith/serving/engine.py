"""Batched generation: left-padded HF `generate` with length-sorted batches, stop tokens and seeds.

Prompts are token ids already rendered with the training chat template (`data.templates.render_prompt`),
so training and inference share one template and one set of stop tokens (ALGORITHMS.md trap 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.errors import DataError, TunesmithError


@dataclass
class GenerationResult:
    """One completion: decoded text (stop token and special tokens removed), its ids, and whether it stopped."""

    text: str
    token_ids: list[int]
    finished: bool


def _check_args(prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise TunesmithError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise TunesmithError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise TunesmithError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise TunesmithError(f"batch_size must be >= 1, got {batch_size}")
    for i, ids in enumerate(prompts):
        if len(ids) == 0:
            raise TunesmithError(f"prompt {i} is empty: a prompt needs at least one token")


def _generation_config(max_new_tokens: int, temperature: float, top_p: float, stop_ids: list[int], pad_id: int):
    from transformers import GenerationConfig

    sampling = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=0 if sampling else None,  # nucleus sampling only; no hidden top-k cut
        eos_token_id=list(stop_ids) or None,
        pad_token_id=pad_id,
        use_cache=True,
    )


def _left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, width) input ids padded on the left, and the matching attention mask."""
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _cut(new_ids: list[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """Tokens before the first stop token, and whether a stop token was emitted."""
    for pos, tok in enumerate(new_ids):
        if tok in stop_ids:
            return new_ids[:pos], True
    return new_ids, False


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        return torch.device("cpu")


def _progress(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=total <= 1,
    )


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    stop_ids: list[int] | None = None,
    seed: int = 0,
) -> list[GenerationResult]:
    """Complete each prompt (token ids); results come back in the prompts' order.

    Greedy when temperature == 0, else temperature / top-p sampling seeded by `seed` (the global torch
    RNG state is restored afterwards). `stop_ids` default to the template's stop tokens.
    """
    _check_args(prompts, max_new_tokens, temperature, top_p, batch_size)
    if not prompts:
        return []
    if stop_ids is None:
        from tunesmith.data.templates import stop_token_ids

        stop_ids = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
    config = _generation_config(max_new_tokens, temperature, top_p, stop_ids, pad_id)
    stops = set(stop_ids)
    # Longest first: similar lengths share a batch (little padding) and memory peaks show up at once.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    results: list[GenerationResult | None] = [None] * len(prompts)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[] if device.type != "cuda" else [device]), torch.inference_mode():
            torch.manual_seed(seed)
            with _progress(len(batches)) as bar:
                task = bar.add_task("generate", total=len(batches))
                for batch in batches:
                    ids, mask = _left_pad([prompts[i] for i in batch], pad_id, device)
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                    for row, index in enumerate(batch):
                        new_ids, finished = _cut(out[row, ids.shape[1] :].tolist(), stops)
                        text = tokenizer.decode(new_ids, skip_special_tokens=True)
                        results[index] = GenerationResult(text=text, token_ids=new_ids, finished=finished)
                    bar.advance(task)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


def load_for_inference(model: str, adapter: str | None = None, dtype: str = "auto", template: str = "auto",
                       device: str = "auto"):
    """(model, tokenizer) ready for `generate` on `device` (model.device values): base model, optional saved
    adapter, chat template resolved.

    The tokenizer's chat template is set to the one `template` names, the same resolution training uses.
    """
    from tunesmith.config.schema import ModelConfig
    from tunesmith.data.templates import resolve_template
    from tunesmith.models.load import load_model, load_tokenizer

    if dtype not in ("auto", "bf16", "fp32"):
        raise TunesmithError(f"dtype must be 'auto', 'bf16' or 'fp32', got '{dtype}'")
    tokenizer = load_tokenizer(model)
    resolve_template(tokenizer, template)  # sets tokenizer.chat_template
    lm = load_model(ModelConfig(name_or_path=model, dtype=dtype, device=device))
    if adapter:
        from tunesmith.models.adapters import load_adapter

        lm = load_adapter(lm, adapter, trainable=False)
    lm.eval()
    return lm, tokenizer


ROLES = ("system", "user", "assistant")


def prompt_messages(row: dict, file: str, line: int | None) -> list[dict]:
    """The conversation to complete from a row {"prompt": str} or {"messages": [...]}.

    A final assistant turn (e.g. a reference answer) is left out: the model writes that turn.
    Bad rows raise DataError naming the file, line and field.
    """
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(file, line, "messages", "must be a non-empty list of {role, content} objects")
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise DataError(file, line, f"messages[{i}]", "must be an object with 'role' and 'content'")
            if m.get("role") not in ROLES:
                raise DataError(file, line, f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {m.get('role')!r}")
            if not isinstance(m.get("content"), str):
                raise DataError(file, line, f"messages[{i}].content", "must be a string")
        convo = [{"role": m["role"], "content": m["content"]} for m in messages]
        if convo[-1]["role"] == "assistant":
            convo = convo[:-1]
        if not convo or convo[-1]["role"] != "user":
            raise DataError(file, line, "messages", "must end with a user turn (optionally followed by one assistant turn)")
        return convo
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(file, line, "prompt", "must be a non-empty string")
        return [{"role": "user", "content": prompt}]
    raise DataError(file, line, None, f"needs a 'prompt' (string) or 'messages' (list) field; found {sorted(row)}")
