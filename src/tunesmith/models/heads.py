"""Scalar heads for reward (and later value) models, read at the last real token.

The head is a Linear(hidden, 1) attached to the transformers model as `reward_head`, so it trains, is
checkpointed (checkpoint.py saves every trainable parameter) and is saved next to the adapter/model as
`reward_head.safetensors`. The score is read at the LAST NON-PADDING token found from the attention mask
(ALGORITHMS.md trap 4: with pad == EOS, "first pad - 1" reads the wrong token).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from tunesmith.errors import TunesmithError

HEAD_ATTR = "reward_head"
HEAD_FILE = "reward_head.safetensors"


class ScalarHead(nn.Module):
    """hidden (…, H) -> score (…,); init N(0, 1/(H+1)) as in OpenAI's lm-human-preferences."""

    def __init__(self, hidden: int):
        super().__init__()
        self.proj = nn.Linear(hidden, 1)
        nn.init.normal_(self.proj.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1)


def get_head(model) -> ScalarHead | None:
    from tunesmith.objectives.base import unwrap  # here, not at the top: objectives.rm imports this module

    return getattr(unwrap(model), HEAD_ATTR, None)


def attach_head(model, seed: int | None = None) -> ScalarHead:
    """Add a trainable fp32 scalar head to `model` (once); returns it."""
    head = get_head(model)
    if head is None:
        from tunesmith.objectives.base import unwrap

        inner = unwrap(model)
        hidden = inner.config.get_text_config().hidden_size
        device = next(inner.parameters()).device
        if seed is not None:
            torch.manual_seed(seed)
        head = ScalarHead(hidden).to(device)
        setattr(inner, HEAD_ATTR, head)
    head.requires_grad_(True)
    return head


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


def save_head(model, folder: str | Path) -> Path | None:
    """Write the head next to the adapter/model; None when the model has none."""
    from safetensors.torch import save_file

    head = get_head(model)
    if head is None:
        return None
    path = Path(folder) / HEAD_FILE
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
