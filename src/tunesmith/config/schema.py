"""The run configuration: one YAML file = one reproducible run. Every field has a one-line description.

Unknown keys and wrong types are errors (see `config.load`), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base for config sections: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name_or_path: str = Field("smollm2-135m-instruct", description="HF folder, a .gguf file, or the alias 'smollm2-135m-instruct' (bundled)")
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path when it is a folder holding one")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="dtype of frozen base weights (auto: bf16 where the hardware runs it natively — CUDA, or a CPU with AMX / AVX512-BF16 — else fp32); trainable weights stay fp32")
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel passed to transformers")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="where the model trains and generates: auto (the first CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
    adapter: str | None = Field(None, description="start from this saved LoRA adapter folder (e.g. an SFT run's adapter)")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input path")
    targets: str | list[str] = Field("all-linear", description="module names to adapt, or 'all-linear'")
    rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    fused: bool = Field(True, description="training: adapter matmul, scaling and residual add as one addmm (models/fused_lora.py); false = peft's forward")


class FreezeConfig(Section):
    trainable_modules: list[str] = Field(default_factory=list, description="substrings of parameter names to train (all others frozen)")
    top_k_layers: int = Field(0, ge=0, description="also train the last k transformer blocks")
    train_lm_head: bool = Field(False, description="also train the output head (and tied embeddings)")


class QLoraConfig(Section):
    """QLoRA (Dettmers et al. 2023): frozen base linear layers in 4-bit (bitsandbytes), LoRA from method.lora in fp32."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit code of the base linear layers: nf4 (NormalFloat, the QLoRA paper's) or fp4")
    double_quant: bool = Field(True, description="also quantise the per-block scales to 8 bits (~0.37 bit/param less)")


class MethodConfig(Section):
    kind: Literal["lora", "qlora", "full", "freeze"] = Field("lora", description="what to train: LoRA adapters, QLoRA (LoRA on a 4-bit base), all weights, or selected modules")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (kind: lora and qlora)")
    qlora: QLoraConfig = Field(default_factory=QLoraConfig, description="4-bit base settings (kind: qlora); compute dtype = model.dtype")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="which modules train (kind: freeze)")
    mixed_precision: bool = Field(False, description="kind full: run the fp32 master weights under bf16 autocast when model.dtype resolves to bf16 (as TRL's bf16=True): ~1.5x faster where bf16 is native (measured on a 2-core AVX512-BF16 EPYC), but an update smaller than a weight's bf16 step reaches the forward pass only by rounding chance, so small-lr runs learn less per step (notes/speed.md). Off: full trains and computes in fp32")


class DataSource(Section):
    path: str = Field(..., description="JSONL, JSON, Parquet or CSV file")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text", "preference", "unpaired", "prompt"] = Field("auto", description="record format; auto-detected from the first row's fields (preference: prompt/chosen/rejected or ranked responses; unpaired: prompt/completion/label for KTO; prompt: prompt-only rows {prompt} or {messages} for PPO/GRPO)")
    columns: dict[str, str] = Field(default_factory=dict, description="rename map {canonical_field: column_in_file}, e.g. {instruction: question}")


class DataConfig(Section):
    train: list[DataSource] = Field(default_factory=list, description="training files")
    eval: list[DataSource] = Field(default_factory=list, description="held-out files for evaluation during training")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="carve this share of train off as eval when no eval files are given")
    template: str = Field("auto", description="'auto' (tokenizer's chat template, else chatml), 'tokenizer', 'chatml', 'alpaca', or a path to a .jinja file")
    system_prompt: str | None = Field(None, description="system message added to rows that have none")
    max_length: int = Field(1024, ge=8, description="longest tokenised row")
    overlong: Literal["truncate", "drop"] = Field("truncate", description="rows longer than max_length: cut them, or skip them (always counted)")
    train_on: Literal["all_assistant", "last_assistant", "everything"] = Field("all_assistant", description="which tokens get loss: every assistant turn, the last one, or the whole text")
    on_error: Literal["stop", "skip"] = Field("stop", description="bad rows stop the run with a message, or are skipped and counted")
    cache: bool = Field(True, description="tokenise once into an on-disk cache keyed by file contents, tokenizer, template and these settings; reruns reuse it")
    cache_dir: str | None = Field(None, description="tokenisation cache folder (default: <tunesmith cache dir>/tokenized, i.e. $TUNESMITH_CACHE or the user cache dir)")


class TrainConfig(Section):
    objective: Literal["sft", "rm", "dpo", "simpo", "orpo", "kto", "ppo", "grpo"] = Field("sft", description="training objective (loss module in tunesmith.objectives)")
    epochs: float = Field(1.0, gt=0, description="passes over the training data (ignored when max_steps > 0)")
    max_steps: int = Field(0, ge=0, description="optimizer steps to run; 0 = derive from epochs")
    batch_size: int = Field(8, ge=1, description="rows per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="share of steps with linear warmup")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate decay after warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a share of peak lr")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0 disables")
    seed: int = Field(42, description="seed for data order, initialisation and dropout")
    group_by_length: bool = Field(True, description="batch rows of similar length (less padding)")
    eval_every: int = Field(0, ge=0, description="evaluate every N optimizer steps; 0 = only at the end")
    save_every: int = Field(0, ge=0, description="checkpoint every N optimizer steps; 0 = only at the end")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk")
    eval_suites: list[str | dict] = Field(default_factory=list, description="eval suites run during training: suite names from eval_suites_config, bundled kinds (ifeval, likelihood, safety), 'KIND=FILE', or inline suite specs {name, kind, data, ...}; metrics logged as suite/<suite>/<metric>")
    eval_suites_config: str | None = Field(None, description="eval YAML whose suites (and generation settings) eval_suites may name")
    eval_suites_every: int = Field(0, ge=0, description="run eval_suites every N optimizer steps; 0 = only at the end (a fresh run also runs them at step 0, the baseline)")
    best_metric: str | None = Field(None, description="keep the best checkpoint by this metric: eval_loss, eval_<metric> or suite/<suite>/<metric>; never pruned by keep_last, recorded in summary.json")
    best_mode: Literal["auto", "min", "max"] = Field("auto", description="best_metric direction: auto (suite metric's own direction; min for loss/perplexity), min or max")
    early_stopping_patience: int = Field(0, ge=0, description="stop after N evaluations without improvement; 0 disables")
    max_bad_steps: int = Field(5, ge=1, description="stop after this many consecutive non-finite losses or gradients")
    log_every: int = Field(1, ge=1, description="write metrics every N optimizer steps")
    packing: bool = Field(False, description="pack each micro-batch's rows into as few max_length rows as fit (positions restart per document, no cross-document attention; same loss, less padding)")
    ce_chunk_size: int = Field(1024, ge=0, description="LM head + cross-entropy in chunks of this many supervised positions, so full fp32 logits never exist; 0 = one piece")
    gradient_checkpointing: bool = Field(False, description="recompute each transformer block's activations in backward: much less memory, ~30% more compute")
    checkpoint_every: int = Field(1, ge=1, description="with gradient_checkpointing: checkpoint every n-th block only (2 = half the blocks: half the saving, half the extra compute)")
    low_memory_malloc: bool = Field(False, description="CPU/glibc: pin malloc's mmap threshold (mmap_threshold_kib) so freed activations go back to the OS instead of a fragmenting heap: lower peak RSS, slower steps (bench/README.md)")
    mmap_threshold_kib: int = Field(4096, ge=64, le=32768, description="with low_memory_malloc: tensors at least this big are mmap'd and unmapped on free; lower = less memory, more page faults (128 KiB: least memory, ~2x slower)")
    lean_activations: bool = Field(True, description="Llama-family blocks (Llama, Mistral, Qwen2/3): RMSNorm keeps its input as it came instead of an fp32 copy, and the SwiGLU MLP keeps only gate and up, recomputing silu(gate)·up in backward; same forward, ~37% less activation memory for LoRA under bf16 (off with train.compile, whose compiler picks what to keep)")
    attention_backward: Literal["matmul", "sdpa"] = Field("matmul", description="bf16 on CPU: SDPA's flash forward with a backward of bf16 batched matmuls (faster than PyTorch's CPU flash backward, most on short rows: 11 vs 50 ms/layer at 8 x 126 tokens, 98 vs 120 at 8 x 512 on a 2-core AMX CPU; gradients within ~0.6% of fp32), or sdpa = PyTorch's own backward; other devices and dtypes always use sdpa")
    compile: bool = Field(False, description="torch.compile each transformer block (fused elementwise ops); the first steps pay the compile time")


class AlignConfig(Section):
    """Preference-alignment settings (objectives rm, dpo, simpo, orpo, kto); ignored by sft."""

    beta: float = Field(0.1, gt=0, description="DPO/IPO/KTO temperature on log-ratios; SimPO reward scale (use ~2.0); ORPO: unused")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field("sigmoid", description="DPO variant: sigmoid (DPO; cDPO with label_smoothing), ipo, hinge, robust (Chowdhury 2024)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed share of flipped preference labels (cDPO / robust DPO / SimPO)")
    sft_alpha: float = Field(0.0, ge=0, description="weight of an RPO-style length-normalised NLL term on the chosen response (DPO)")
    rejected_tokens: Literal["all", "to_divergence"] = Field("all", description="pairwise objectives: train the rejected answer on all its tokens, or only up to its first token that differs from chosen (near-identical pairs; Smaug / Step-DPO)")
    shared_prefix: bool = Field(True, description="pairwise log-prob objectives: run each pair as one row holding the shared prompt (and common answer start) once, the rejected tail attending to it through a 4D mask; same log-probs, fewer tokens (SDPA/eager attention)")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin gamma")
    orpo_lambda: float = Field(0.1, ge=0, description="ORPO weight of the odds-ratio term added to the chosen NLL")
    kto_desirable_weight: float = Field(1.0, gt=0, description="KTO lambda_D: weight of desirable (label true) rows")
    kto_undesirable_weight: float = Field(1.0, gt=0, description="KTO lambda_U: weight of undesirable (label false) rows")
    rm_margin: float = Field(0.0, description="reward model: margin subtracted from r_chosen - r_rejected (added to a row's own 'margin' field)")
    rm_center_coef: float = Field(0.0, ge=0, description="reward model: coefficient c of the centring term c*(r_w + r_l)^2 (~0.01)")
    reference: Literal["auto", "copy", "adapter_disabled"] = Field("auto", description="reference model: auto (LoRA: adapters disabled; else a frozen copy), copy, adapter_disabled")
    disable_dropout: bool = Field(True, description="turn every dropout off in the policy during alignment (noisy log-probs otherwise)")
    precompute_ref_logps: bool = Field(False, description="DPO: compute the reference log-probs of every pair once before training and cache them on disk (no reference forward per step)")
    ref_logps_cache: str = Field("runs/.cache/ref_logps", description="folder for precomputed reference log-probs, one file per (data, model, adapter, template, max_length) hash")


class RLConfig(Section):
    """Online RL settings (objectives ppo, grpo): rollouts, rewards, advantages and the clipped losses."""

    rollout_prompts: int = Field(8, ge=1, description="prompts per rollout; each gets group_size samples, then ppo_epochs passes of micro-batches (train.batch_size samples)")
    group_size: int = Field(1, ge=1, description="samples per prompt G (GRPO needs >= 2; PPO usually 1)")
    max_new_tokens: int = Field(64, ge=1, description="longest sampled response in tokens")
    temperature: float = Field(0.7, gt=0, description="sampling temperature; log-probs are computed from logits / temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling threshold")
    generation_batch_size: int = Field(32, ge=1, description="prompts generated (and reward-model rows scored) per batch")
    ppo_epochs: int = Field(4, ge=1, description="optimisation passes over each rollout (GRPO: 'num_iterations', usually 1)")
    kl_coef: float = Field(0.05, ge=0, description="KL weight beta to the reference (0 = no reference model)")
    kl_in_loss: bool | None = Field(None, description="KL as a k3 term in the loss (GRPO default) or as a penalty in the reward (PPO default; GRPO: summed over the response)")
    kl_target: float | None = Field(None, gt=0, description="adaptive KL controller (Ziegler et al. 2019): steer kl_coef so the mean per-response KL to the reference approaches this many nats; None = fixed kl_coef")
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL controller horizon: kl_coef changes by at most 20% x samples-per-rollout / kl_horizon per rollout")
    max_kl: float | None = Field(None, gt=0, description="KL bound: a rollout whose mean per-response KL to the reference (nats) exceeds it is flagged (kl_over_bound metric, a warning, summary.json 'kl')")
    gamma: float = Field(1.0, ge=0, le=1, description="PPO discount gamma for GAE")
    lam: float = Field(0.95, ge=0, le=1, description="PPO GAE lambda")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    cliprange_value: float = Field(0.2, gt=0, description="PPO value clip around the rollout's values")
    vf_coef: float = Field(0.1, ge=0, description="PPO value-loss coefficient")
    whiten_advantages: bool = Field(True, description="PPO: whiten GAE advantages over the rollout's tokens")
    scale_rewards: bool = Field(True, description="GRPO: divide group-centred rewards by the group std (+1e-4)")
    missing_eos_penalty: float = Field(1.0, ge=0, description="subtracted from the score of responses that hit max_new_tokens without a stop token")
    reward_functions: list[str] = Field(default_factory=list, description="reward functions summed into the score: built-ins (json_fields, json_valid), 'module:function' or 'file.py:function'; fn(completion, row) -> float")
    reward_model: str | None = Field(None, description="folder of a trained reward model (an rm run's adapter/ or model/ with reward_head.safetensors)")
    reward_model_base: str | None = Field(None, description="base model under a reward-model adapter; default model.name_or_path")
    reward_fallback: float = Field(0.0, description="reward given when a reward function raises or returns a non-number (counted and reported)")
    eval_at_start: bool = Field(False, description="also score the held-out prompts (data.eval) before the first step, logged as eval step 0 and summary.json 'initial_eval' (the starting point)")


class OutputConfig(Section):
    dir: str = Field("runs/run", description="output folder: checkpoints, adapter, metrics.jsonl, tensorboard/")
    tensorboard: bool = Field(True, description="also write TensorBoard event files")


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="base model")
    method: MethodConfig = Field(default_factory=MethodConfig, description="what is trained")
    data: DataConfig = Field(default_factory=DataConfig, description="data files, format and masking")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation")
    align: AlignConfig = Field(default_factory=AlignConfig, description="preference-alignment settings (rm, dpo, simpo, orpo, kto)")
    rl: RLConfig = Field(default_factory=RLConfig, description="online RL settings (ppo, grpo)")
    output: OutputConfig = Field(default_factory=OutputConfig, description="where results go")
