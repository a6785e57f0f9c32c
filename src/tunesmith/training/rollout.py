"""Online batch source for PPO/GRPO: generate from the policy, score, compute advantages, serve micro-batches.

The loop stays the same (DESIGN.md): it pulls `batch(epoch, index)`. One epoch is one pass over the prompt set
in a seeded order, cut into rollouts of `rl.rollout_prompts` prompts (a trailing partial rollout is left for
later epochs' orders). A rollout = group_size samples per prompt (engine-style left-padded batched sampling,
seeded per rollout), then `rl.ppo_epochs` passes over its samples in seeded micro-batches of train.batch_size.
The rollout is generated when its first micro-batch is asked for, i.e. with the policy as it is then.

Per rollout (ALGORITHMS.md; Huang et al. 2024 "The N Implementation Details of RLHF with PPO"; Shao et al. 2024):
old log-probs (+ values for PPO) of the policy and reference log-probs, all with dropout off; the score from
the reward source, minus `missing_eos_penalty` for responses without a stop token; PPO: per-token KL-shaped
rewards, GAE, whitened advantages; GRPO: group-normalised sequence rewards on every token.

KL to the reference: each rollout's mean per-response KL (Σ_t logπ - logπ_ref over the sampled tokens, nats)
is logged as `kl`; with `rl.kl_target` the coefficient β adapts after every rollout (advantages.KLController);
a rollout over `rl.max_kl` is flagged (`kl_over_bound`), warned about and counted in `kl_report()`.

Resume: the cursor (epoch, index) fixes the rollout, its prompts and its sampling seed; a checkpoint taken
mid-rollout also stores that rollout's samples (`save_state`), since the policy that generated them is gone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from tunesmith.data.collate import pad_batch, plain_order
from tunesmith.data.prompts import PromptItem
from tunesmith.data.templates import Example, stop_token_ids
from tunesmith.errors import TunesmithError
from tunesmith.objectives import advantages as adv
from tunesmith.objectives.ppo import response_forward

console = Console(stderr=True)
STATE_FILE = "rollout.pt"


@dataclass
class Sample:
    """One sampled response with its per-token rollout tensors (length L = response tokens incl. the stop token)."""

    example: Example
    old_logps: torch.Tensor
    ref_logps: torch.Tensor | None
    old_values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None
    metrics: dict[str, float]


def sample_responses(model, prompts: list[list[int]], rl, stop_ids: list[int], pad_id: int, seed: int,
                     temperature: float | None = None) -> list[tuple[list[int], bool]]:
    """(response ids INCLUDING the stop token when one was emitted, finished) per prompt, in prompt order."""
    from tunesmith.serving.engine import _generation_config, _left_pad

    temperature = rl.temperature if temperature is None else temperature
    config = _generation_config(rl.max_new_tokens, temperature, rl.top_p, stop_ids, pad_id)
    stops, out = set(stop_ids), []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(prompts), rl.generation_batch_size):
                ids, mask = _left_pad(prompts[start : start + rl.generation_batch_size], pad_id, device)
                generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                for row in generated[:, ids.shape[1] :].tolist():
                    stop = next((i for i, tok in enumerate(row) if tok in stops), None)
                    out.append((row[: stop + 1], True) if stop is not None else (row, False))
    finally:
        model.train(was_training)
    return out


def collate(samples: list[Sample], pad_id: int) -> dict:
    """Right-padded rows + flat (M,) per-token tensors in row-major response order + per-row metrics."""
    batch = pad_batch([s.example for s in samples], pad_id)
    batch["old_logps"] = torch.cat([s.old_logps for s in samples])
    batch["advantages"] = torch.cat([s.advantages for s in samples])
    for key in ("ref_logps", "old_values", "returns"):
        if getattr(samples[0], key) is not None:
            batch[key] = torch.cat([getattr(s, key) for s in samples])
    batch["row_metrics"] = {k: torch.tensor([s.metrics[k] for s in samples]) for k in samples[0].metrics}
    batch["num_rows"], batch["num_tokens"] = len(samples), int(batch["old_logps"].numel())
    return batch


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) right-padded values and the (N, L) float mask."""
    width = max(len(r) for r in rows)
    values, mask = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        values[i, : len(r)], mask[i, : len(r)] = r, 1.0
    return values, mask


def _reference_forward(ref, batch: dict, temperature: float) -> torch.Tensor:
    """Per-token reference log-probs (adapters disabled, or the frozen copy)."""
    disabled = ref.model.disable_adapter() if ref.kind == "adapter_disabled" else contextlib.nullcontext()
    with disabled:
        return response_forward(ref.model, batch, temperature).logps


class RolloutSource:
    """PPO/GRPO micro-batches with a deterministic (epoch, index) cursor, like the SFT and pairwise sources."""

    def __init__(self, prompts: list[PromptItem], model, ref, tokenizer, objective, reward, rl, train_cfg):
        if objective.advantage_kind == "group" and rl.group_size < 2:
            raise TunesmithError("grpo needs rl.group_size >= 2 samples per prompt (e.g. 8)")
        self.prompts, self.model, self.ref, self.tokenizer = prompts, model, ref, tokenizer
        self.objective, self.reward, self.rl = objective, reward, rl
        self.batch_size, self.seed = train_cfg.batch_size, train_cfg.seed
        self.per_rollout = min(rl.rollout_prompts, len(prompts))
        self.rollouts_per_epoch = len(prompts) // self.per_rollout
        self.num_samples = self.per_rollout * rl.group_size
        self.batches_per_rollout = -(-self.num_samples // self.batch_size)
        self.stop_ids = stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.kl_in_reward = objective.needs_reference and not getattr(objective, "kl_in_loss", False)
        if (rl.kl_target or rl.max_kl) and not objective.needs_reference:
            raise TunesmithError("rl.kl_target / rl.max_kl measure the KL to the reference: set rl.kl_coef > 0")
        self.kl_ctl = adv.KLController(objective.kl_coef, rl.kl_target, rl.kl_horizon)
        self.kl_stats = {"rollouts": 0, "max_rollout_kl": None, "last_rollout_kl": None, "over_bound": 0}
        self._id: int | None = None
        self._warned = False
        self._samples: list[Sample] = []

    def batches_per_epoch(self) -> int:
        return self.rollouts_per_epoch * self.rl.ppo_epochs * self.batches_per_rollout

    def _order(self, rollout: int, ppo_epoch: int) -> list[list[int]]:
        return plain_order(self.num_samples, self.batch_size, self.seed + 7919 * rollout, ppo_epoch)

    def batch(self, epoch: int, index: int) -> dict:
        slot, within = divmod(index, self.rl.ppo_epochs * self.batches_per_rollout)
        ppo_epoch, micro = divmod(within, self.batches_per_rollout)
        rollout = epoch * self.rollouts_per_epoch + slot
        if self._id != rollout:
            self._samples = self._make_rollout(rollout, epoch, slot)
            self._id = rollout
        return collate([self._samples[i] for i in self._order(rollout, ppo_epoch)[micro]], self.pad_id)

    # ------------------------------------------------------------ one rollout

    def _make_rollout(self, rollout: int, epoch: int, slot: int) -> list[Sample]:
        chosen = plain_order(len(self.prompts), self.per_rollout, self.seed, epoch)[slot]
        items = [self.prompts[i] for i in chosen for _ in range(self.rl.group_size)]  # groups are contiguous
        responses = sample_responses(self.model, [p.ids for p in items], self.rl, self.stop_ids, self.pad_id,
                                     seed=self.seed * 1_000_003 + rollout)
        examples = [Example(p.ids + ids, [-100] * len(p.ids) + ids, p.source, p.line, False) for p, (ids, _) in zip(items, responses)]
        logps, ref_logps, values = self._old_forward(examples, rollout)
        finished = torch.tensor([done for _, done in responses])
        texts = [self.tokenizer.decode([t for t in ids if t not in self.stop_ids], skip_special_tokens=True) for ids, _ in responses]
        scores, failed = self.reward.score(texts, [p.row for p in items], [p.messages for p in items])
        if failed.any() and not self._warned:  # once; the counts go to metrics and summary.json
            self._warned = True
            console.print(f"[yellow]rollout {rollout}: {int(failed.sum())} of {len(texts)} rewards failed and got "
                          f"rl.reward_fallback (counted; see reward_failed_rate), e.g. {self.reward.stats.examples[0]}")
        scores = scores - self.rl.missing_eos_penalty * (~finished).float()
        kl = torch.stack([(lp - rp).sum() for lp, rp in zip(logps, ref_logps)]) if ref_logps else torch.zeros(len(examples))
        advantages, returns = self._advantages(scores, kl, logps, ref_logps, values)
        group_std = adv.group_std(scores, self.rl.group_size)
        shared = self._kl_bookkeeping(rollout, float(kl.mean())) if ref_logps else {}
        samples = []
        for i, example in enumerate(examples):
            metrics = {"score": float(scores[i]), "kl": float(kl[i]), "response_length": float(len(logps[i])),
                       "eos_rate": float(finished[i]), "reward_failed_rate": float(failed[i]), **shared}
            if self.rl.group_size > 1:
                metrics["group_reward_std"] = float(group_std[i])
            samples.append(Sample(example, logps[i], ref_logps[i] if ref_logps else None, values[i] if values else None,
                                  advantages[i], returns[i] if returns else None, metrics))
        return samples

    def _kl_bookkeeping(self, rollout: int, mean_kl: float) -> dict[str, float]:
        """Per-rollout KL metrics (β used, bound flag); then adapt β for the next rollout."""
        shared = {"kl_coef": float(self.objective.kl_coef)}
        stats = self.kl_stats
        stats["rollouts"] += 1
        stats["last_rollout_kl"] = mean_kl
        stats["max_rollout_kl"] = mean_kl if stats["max_rollout_kl"] is None else max(stats["max_rollout_kl"], mean_kl)
        if self.rl.max_kl is not None:
            over = mean_kl > self.rl.max_kl
            shared["kl_over_bound"] = float(over)
            if over:
                stats["over_bound"] += 1
                console.print(f"[yellow]rollout {rollout}: mean KL to the reference {mean_kl:.3f} nats exceeds rl.max_kl "
                              f"{self.rl.max_kl} (β={self.objective.kl_coef:.4f}; raise rl.kl_coef or set rl.kl_target)")
        self.objective.kl_coef = self.kl_ctl.update(mean_kl, self.num_samples)
        return shared

    def kl_report(self) -> dict:
        """KL to the reference over the run vs the configured bound (for summary.json)."""
        return {**self.kl_stats, "max_kl": self.rl.max_kl, "kl_target": self.rl.kl_target,
                "final_kl_coef": float(self.objective.kl_coef),
                "within_bound": None if self.rl.max_kl is None else self.kl_stats["over_bound"] == 0}

    @torch.no_grad()
    def _old_forward(self, examples: list[Example], rollout: int) -> tuple[list, list, list]:
        """Per-sample per-token policy log-probs, reference log-probs and values, in PPO epoch 0's micro-batches
        (so the first update sees ratio == 1 exactly)."""
        from tunesmith.training.loop import _to_device, autocast_context

        uses_values = self.objective.uses_values
        logps: list = [None] * len(examples)
        refs: list = [None] * len(examples) if self.ref is not None else []
        values: list = [None] * len(examples) if uses_values else []
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for rows in self._order(rollout, 0):
                batch = _to_device(pad_batch([examples[i] for i in rows], self.pad_id), device)
                with autocast_context(self.model):
                    fwd = response_forward(self.model, batch, self.rl.temperature, with_values=uses_values)
                    ref = _reference_forward(self.ref, batch, self.rl.temperature) if self.ref is not None else None
                counts = (batch["labels"][:, 1:] != -100).sum(dim=1).tolist()  # flat (M,) -> one piece per row
                pieces = [t.float().cpu().split(counts) if t is not None else None for t in (fwd.logps, ref, fwd.values)]
                for k, i in enumerate(rows):
                    logps[i] = pieces[0][k]
                    if pieces[1] is not None:
                        refs[i] = pieces[1][k]
                    if pieces[2] is not None:
                        values[i] = pieces[2][k]
        finally:
            self.model.train(was_training)
        return logps, refs, values

    def _advantages(self, scores, kl, logps, ref_logps, values) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Per-sample advantages (and PPO returns) as lists of (L_i,) tensors."""
        lengths = [len(lp) for lp in logps]
        if self.objective.advantage_kind == "group":
            rewards = scores - self.objective.kl_coef * kl if self.kl_in_reward else scores
            per_row = adv.group_advantages(rewards, self.rl.group_size, scale=self.rl.scale_rewards)
            return [per_row[i].expand(n).clone() for i, n in enumerate(lengths)], None
        lp, mask = _padded(logps)
        rp = _padded(ref_logps)[0] if ref_logps else lp
        v = _padded(values)[0]
        rewards = adv.kl_shaped_rewards(scores, lp, rp, mask, self.objective.kl_coef if ref_logps else 0.0)
        advantages, returns = adv.gae(rewards, v, mask, self.rl.gamma, self.rl.lam)
        if self.rl.whiten_advantages:
            advantages = adv.whiten(advantages, mask)
        return [advantages[i, :n] for i, n in enumerate(lengths)], [returns[i, :n] for i, n in enumerate(lengths)]

    # ------------------------------------------------------------ resume

    def save_state(self, checkpoint: Path) -> None:
        """Store the current rollout next to a checkpoint (needed when the checkpoint falls mid-rollout)."""
        if self._id is not None:
            torch.save({"rollout": self._id, "samples": self._samples, "kl_coef": self.objective.kl_coef,
                        "kl_stats": self.kl_stats}, Path(checkpoint) / STATE_FILE)

    def load_state(self, checkpoint: Path) -> None:
        path = Path(checkpoint) / STATE_FILE
        if path.is_file():
            state = torch.load(path, weights_only=False)
            self._id, self._samples = state["rollout"], state["samples"]
            if "kl_coef" in state:  # the adapted β after that rollout, and the KL bookkeeping so far
                self.objective.kl_coef = self.kl_ctl.value = state["kl_coef"]
                self.kl_stats = state["kl_stats"]


@torch.no_grad()
def evaluate_prompts(model, tokenizer, items: list[PromptItem], reward, rl, seed: int = 0) -> dict[str, float]:
    """Greedy responses to held-out prompts, scored by the reward source. 'loss' = -mean reward, so the
    loop's best-eval tracking and early stopping follow the reward."""
    stop_ids = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    responses = sample_responses(model, [p.ids for p in items], rl, stop_ids, pad_id, seed, temperature=0.0)
    texts = [tokenizer.decode([t for t in ids if t not in stop_ids], skip_special_tokens=True) for ids, _ in responses]
    scores, failed = reward.score(texts, [p.row for p in items], [p.messages for p in items])
    finished = torch.tensor([done for _, done in responses], dtype=torch.float32)
    mean = float(scores.mean())
    return {"loss": -mean, "reward_mean": mean, "reward_std": float(scores.std()) if len(items) > 1 else 0.0,
            "eos_rate": float(finished.mean()), "response_length": sum(len(r) for r, _ in responses) / len(responses),
            "reward_failed_rate": float(failed.float().mean())}


def build_rollout_source(cfg, prompts: list[PromptItem], model, ref, tokenizer, objective) -> tuple[RolloutSource, object]:
    """The rollout source and its reward source (loaded once; shared with the evaluation hook)."""
    from tunesmith.training.rewards import build_reward_source

    reward = build_reward_source(cfg.rl, cfg.model, tokenizer, cfg.data.max_length)
    return RolloutSource(prompts, model, ref, tokenizer, objective, reward, cfg.rl, cfg.train), reward
