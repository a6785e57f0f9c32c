"""Scalar heads: the reward model's head (read at the last real token) and PPO's value head.

A head is a Linear(hidden, 1) attached to the transformers model as an attribute (`reward_head`,
`value_head`), so it trains and is checkpointed (checkpoint.py saves every trainable parameter). The final
save (`save_with_heads`) keeps heads OUT of the model folder, so a full fine-tune's model/ loads as a plain
causal LM, and writes each head next to it as `<attr>.safetensors`. The reward is read at the LAST
NON-PADDING token found from the attention mask (ALGORITHMS.md trap 4: with pad == EOS, "first pad - 1"
reads the wrong token).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from tunesmith.errors import TunesmithError

HEAD_ATTR = "reward_head"
HEAD_FILE = "reward_head.safetensors"
VALUE_ATTR = "value_head"
HEADS = {HEAD_ATTR: HEAD_FILE, VALUE_ATTR: "value_head.safetensors"}  # attribute -> file next to the model


class ScalarHead(nn.Module):
    """hidden (…, H) -> score (…,); init N(0, 1/(H+1)) as in OpenAI's lm-human-preferences."""

    def __init__(self, hidden: int):
        super().__init__()
        self.proj = nn.Linear(hidden, 1)
        nn.init.normal_(self.proj.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1)


def _inner(model):
    from tunesmith.objectives.base import unwrap  # here, not at the top: objectives.rm imports this module

    return unwrap(model)


def get_head(model, attr: str = HEAD_ATTR) -> ScalarHead | None:
    return getattr(_inner(model), attr, None)


def attach_head(model, seed: int | None = None, attr: str = HEAD_ATTR) -> ScalarHead:
    """Add a trainable fp32 scalar head to `model` as `attr` (once); returns it."""
    head = get_head(model, attr)
    if head is None:
        inner = _inner(model)
        hidden = inner.config.get_text_config().hidden_size
        device = next(inner.parameters()).device
        if seed is not None:
            torch.manual_seed(seed)
        head = ScalarHead(hidden).to(device)
        setattr(inner, attr, head)
    head.requires_grad_(True)
    return head


@contextlib.contextmanager
def heads_detached(model) -> Iterator[dict[str, ScalarHead]]:
    """Temporarily remove every scalar head from the model (so save_pretrained writes a plain causal LM)."""
    inner = _inner(model)
    removed = {attr: getattr(inner, attr) for attr in HEADS if getattr(inner, attr, None) is not None}
    for attr in removed:
        delattr(inner, attr)
    try:
        yield removed
    finally:
        for attr, head in removed.items():
            setattr(inner, attr, head)


def save_with_heads(model, folder: str | Path) -> Path:
    """The adapter (LoRA) or a plain HF model folder (full / freeze) WITHOUT heads, plus one safetensors
    file per attached head next to it (reward_head.safetensors, value_head.safetensors)."""
    from tunesmith.models.adapters import save_adapter

    with heads_detached(model) as heads:
        out = save_adapter(model, folder)
    for attr in heads:
        save_head(model, out, attr)
    return out


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(N,) index of each row's last attended position (works for left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(dim=1)


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N,) scalar rewards at the last real token of each row."""
    head = get_head(model)
    if head is None:
        raise TunesmithError("this model has no reward head: train it with objective rm or load one")
    from tunesmith.objectives.base import backbone_and_head

    backbone, _ = backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, T, H)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]  # (N, H)
    return head(last).float()


def save_head(model, folder: str | Path, attr: str = HEAD_ATTR) -> Path | None:
    """Write the head `attr` next to the adapter/model as HEADS[attr]; None when the model has none."""
    from safetensors.torch import save_file

    head = get_head(model, attr)
    if head is None:
        return None
    path = Path(folder) / HEADS[attr]
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(path))
    return path


def load_head(model, folder: str | Path) -> ScalarHead:
    from safetensors.torch import load_file

    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise TunesmithError(f"{path}: no reward head saved there (train one with objective rm)")
    head = attach_head(model)
    head.load_state_dict(load_file(str(path)))
    return head
