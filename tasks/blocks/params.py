"""The one typed schema of params.yaml.

Every stage and every flow calls `load_params()` first: an unknown key, a wrong type or an impossible value stops
there with one message naming the key, before any work starts. The defaults are the embedded toy world on CPU, the
values of params.yaml (tests/test_params.py fails when the two differ). A params file may leave keys out: each is
then its stage's default (`overlay`), and a file with `extends: <file>` is that file with its own keys merged in. A
real recipe (recipes/) is such an overlay, never another code path.

    python -m tasks.blocks.params recipes/qwen2.5-math-1.5b.yaml   # the complete params a file describes, as YAML
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

PARAMS_FILE = Path(os.environ.get("R1_PARAMS_FILE", "params.yaml"))
EXTENDS = "extends"  # a params file's base: another params file, its path relative to this one

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraParams(Section):
    enabled: bool = False
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # More than one process, or an accelerate config: training stages (SFT, GRPO, reward model) run under
    # `accelerate launch`, one process per GPU (or CPU process, gloo). `accelerate_config` picks DDP, DeepSpeed
    # ZeRO-2/3 or FSDP (configs/accelerate/); null: DDP.
    num_processes: PositiveInt = 1
    accelerate_config: str | None = None


class TrackingParams(Section):
    experiment: str = "r1-pipeline"
    log_samples: PositiveInt = 16  # completions logged as an MLflow table per stage


class OrchestrationParams(Section):
    retries: int = Field(1, ge=0)  # a stage failing for a transient reason is retried this many times by the flow
    retry_delay_seconds: float = Field(10, ge=0)
    retrain_cron: str = "0 3 * * *"  # the scheduled-retrain deployment's schedule (cron, in retrain_timezone)
    retrain_timezone: str = "UTC"

    @field_validator("retrain_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError  # Prefect's own cron parser

        try:
            CronSim(value, datetime.now())
        except CronSimError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return value

    @field_validator("retrain_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'UTC' or 'Europe/Paris')") from None
        return value


class PromotionParams(Section):
    # The gate of the scheduled-retrain flow: the new final model becomes `champion` only if none of these evaluation
    # metrics (keys of metrics/<model>.json) is worse than the champion's by more than `tolerance`.
    gate: dict[str, Literal["higher", "lower"]] = {"pass@1": "higher", "refusal_rate": "higher"}  # better when
    tolerance: float = Field(0.0, ge=0)


class PromptParams(Section):
    # R1's output format is asked for by the system prompt, never by changing a tokenizer. The toy models learn the
    # format from cold-start data, so the toy default is empty.
    system: str = ""
    language: str = "en"  # target language of the reasoning (language-consistency reward)


class ToyWorldParams(Section):
    seed: int = 0
    # Pools of reasoning problems, disjoint by number tuple (tasks/blocks/toy_world.py POOLS; data/README.md says why).
    test_size: int = Field(1000, ge=1)  # held out for evaluation, one phrasing per tuple
    dev_size: int = Field(200, ge=1)  # held out for the dev curve logged during RL, one phrasing per tuple
    cold_start_size: PositiveInt = 1000
    train_size: PositiveInt = 2000  # RL prompts
    sampling_pool_size: PositiveInt = 2000  # rejection-sampling (and teacher-trace) prompts
    corpus_size: PositiveInt = 3000  # worked problems in the pretraining corpus
    step_weights: list[PositiveFloat] = Field([0.05, 0.45, 0.5], min_length=1, max_length=3)  # 1-, 2-, 3-step
    phrasings_per_tuple: PositiveInt = 4  # training pools: wordings of one number tuple at most
    max_operand: int = Field(12, ge=2, le=99)
    max_value: int = Field(20, ge=4, le=999)  # every intermediate value stays in [1, max_value]
    cold_start_terse_fraction: float = Field(0.3, ge=0, le=1)  # cold-start rows reasoning in one terse line
    cold_start_french_fraction: float = Field(0.2, ge=0, le=1)  # cold-start rows reasoning in French
    french_fraction: float = Field(0.3, ge=0, le=1)  # share of the pretraining corpus reasoning in French
    r1_form_fraction: float = Field(0.05, ge=0, le=1)  # share of the corpus in the R1 form, behind a header for it
    arithmetic_docs: int = Field(1000, ge=0)  # drill documents of single steps ("7 + 5 = 12.") in the corpus
    general_docs: PositiveInt = 500  # plain general-text documents in the pretraining corpus
    facts: PositiveInt = 40  # rows of the generated fact table (in the corpus; asked about by general tasks)
    general_test_size: PositiveInt = 40  # held-out general tasks
    harmful_requests: PositiveInt = 130  # harmful requests (with refusals); benign look-alikes come with them
    harmful_test_size: PositiveInt = 100  # held out for the refusal rate
    lookalike_test_size: PositiveInt = 60  # benign look-alikes held out for the needless-refusal rate

    @model_validator(mode="after")
    def _fractions_fit(self) -> ToyWorldParams:
        for a, b in (("cold_start_terse_fraction", "cold_start_french_fraction"),
                     ("french_fraction", "r1_form_fraction")):
            if getattr(self, a) + getattr(self, b) > 1:
                raise ValueError(f"{a} + {b} must not exceed 1")
        if self.harmful_test_size >= self.harmful_requests:
            raise ValueError(f"harmful_test_size ({self.harmful_test_size}) must be below harmful_requests "
                             f"({self.harmful_requests})")
        return self


class RealSource(Section):
    # One public data set file brought into data/real/<name>/ by the stage real_data@<name> (tasks/real_data.py).
    path: str  # a JSON Lines file, e.g. ../shared/data/gsm8k/train.jsonl
    format: Literal["gsm8k", "math"]  # gsm8k: question + answer ending `#### N`; math: problem, solution, answer
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the stage fails when the file's hash differs


class RealDataParams(Section):
    # Empty for the toy world: the foreach stage real_data@<name> then generates no stage at all.
    sources: dict[str, RealSource] = {}

    @field_validator("sources")
    @classmethod
    def _names(cls, sources: dict[str, RealSource]) -> dict[str, RealSource]:
        bad = [name for name in sources if not name.isidentifier()]
        if bad:
            raise ValueError(f"source names {bad} must be identifiers (they name stages and data directories)")
        return sources


class BaseModelParams(Section):
    # "toy": build a tokenizer and pretrain a tiny Llama here. "pretrained": resolve `model_name_or_path`
    # (a Hugging Face id or a local directory) and save it as the base.
    source: Literal["toy", "pretrained"] = "toy"
    model_name_or_path: str | None = None
    vocab_size: int = Field(1024, ge=300)
    hidden_size: PositiveInt = 128
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    intermediate_size: PositiveInt = 512
    max_position_embeddings: PositiveInt = 256
    epochs: PositiveFloat = 4.0
    learning_rate: PositiveFloat = 3e-3
    batch_size: PositiveInt = 16
    seq_len: PositiveInt = 160
    gradient_checkpointing: bool = False  # trades compute for memory: on for big models, off for tiny ones

    def training_memory_bytes(self) -> int:
        """A lower bound on the memory training this toy Llama takes: fp32 weights, gradients and Adam's two moments,
        16 bytes a parameter (activations not counted)."""
        h = self.hidden_size
        parameters = self.vocab_size * h + self.num_layers * (4 * h * h + 3 * h * self.intermediate_size + 2 * h) + h
        return 16 * parameters

    @model_validator(mode="after")
    def _consistent(self) -> BaseModelParams:
        if self.source == "pretrained" and not self.model_name_or_path:
            raise ValueError("model_name_or_path is required when source is 'pretrained'")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        return self


class SFTParams(Section):
    model: str = "models/base"  # the starting model directory
    data: str = "data/toy/cold_start.jsonl"
    epochs: PositiveFloat = 3.0
    learning_rate: PositiveFloat = 1e-3
    batch_size: PositiveInt = 16
    gradient_accumulation_steps: PositiveInt = 1
    max_length: PositiveInt = 256
    warmup_steps: float = Field(0.05, ge=0)  # < 1: a ratio of total steps (transformers semantics)
    save_steps: PositiveInt = 200
    gradient_checkpointing: bool = False
    lora: LoraParams = LoraParams()
    # Loss on the assistant's tokens as the chat template's {% generation %} markers mark them (TRL's
    # `assistant_only_loss`; TRL swaps in its training version of templates it knows, e.g. Qwen2.5's), on top of the
    # completion-only loss. Opt-in and left out of the params' dumps while off, so adding it changed no stage's hash.
    assistant_only_loss: bool = Field(False, exclude_if=lambda on: not on)


class StudentSFTParams(SFTParams):
    """One distillation student's SFT params (built by DistillParams.student, not a params.yaml section)."""
    teacher: str  # the SFT warns when the student is larger than this model


class RewardModelParams(SFTParams):
    model: str = "models/resft"  # a sequence-classification head (one score) is put on this model
    data: str = "data/toy/preferences_train.jsonl"
    learning_rate: PositiveFloat = 5e-4
    test_data: str = "data/toy/preferences_test.jsonl"  # held-out pairs: pairwise accuracy
    center_rewards_coefficient: float | None = Field(0.01, ge=0)  # keeps scores near 0 (TRL's suggested value)
    assistant_only_loss: Literal[False] = Field(False, exclude=True)  # SFT only: a reward model scores whole replies


class RewardWeights(Section):
    accuracy: float = Field(1.0, ge=0)
    format: float = Field(0.25, ge=0)
    language_consistency: float = Field(0.25, ge=0)


class AlignmentRewardWeights(RewardWeights):
    helpfulness: float = Field(1.0, ge=0)  # reward model on the summary after </think>, general prompts
    harmlessness: float = Field(1.0, ge=0)  # reward model on the whole response, harmful prompts


class GRPOParams(Section):
    model: str = "models/cold_start_sft"
    data: str = "data/toy/train.jsonl"
    num_prompts: PositiveInt | None = None  # use the first N prompts of `data` (None: all)
    # The dev curve: TRL's evaluation on the first `dev_prompts` held-out prompts of `dev_data`, every `eval_steps`
    # and before the first step, `num_generations_eval` samples each (eval_* columns of plots/<stage>_dev.csv).
    dev_data: str = "data/toy/dev.jsonl"
    dev_prompts: PositiveInt = 128
    num_generations_eval: PositiveInt = 2
    eval_steps: PositiveInt = 20
    rewards: RewardWeights = RewardWeights()
    max_steps: PositiveInt = 80
    learning_rate: PositiveFloat = 3e-5
    per_device_train_batch_size: PositiveInt = 64
    gradient_accumulation_steps: PositiveInt = 1
    num_generations: int = Field(8, ge=2)
    generation_batch_size: PositiveInt | None = None  # None: per_device_train_batch_size * grad accumulation
    max_completion_length: PositiveInt = 96
    temperature: PositiveFloat = 0.7
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0)  # KL coefficient
    epsilon: PositiveFloat = 0.2
    num_iterations: PositiveInt = 1
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "batch"
    warmup_steps: float = Field(0.0, ge=0)
    logging_steps: PositiveInt = 5
    save_steps: PositiveInt = 20
    gradient_checkpointing: bool = False
    # Rollouts with vLLM (GPU environment only): "colocate" shares the training GPUs; "server" starts
    # `trl vllm-serve` on the last `vllm_server_gpus` visible GPUs (127.0.0.1:`vllm_server_port`) for the stage's
    # duration and trains on the others.
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_port: int = Field(8000, ge=1024, le=65535)
    vllm_server_gpus: PositiveInt = 1
    vllm_server_timeout: PositiveFloat = 600  # seconds to wait for the server to be healthy (model load, CUDA graphs)
    lora: LoraParams = LoraParams()
    # R1-Zero prompts the base model with plain text: a template with one {prompt} slot replaces the model's chat
    # template (and is saved with the trained model, so evaluation prompts it the same way). None: the chat template.
    prompt_template: str | None = None

    @model_validator(mode="after")
    def _generation_batch(self) -> GRPOParams:
        if self.prompt_template is not None and self.prompt_template.count("{prompt}") != 1:
            raise ValueError("prompt_template must contain the slot {prompt} exactly once")
        if self.per_device_train_batch_size % self.num_generations_eval:
            raise ValueError(f"num_generations_eval ({self.num_generations_eval}) must divide "
                             f"per_device_train_batch_size ({self.per_device_train_batch_size}), the eval batch")
        batch = self.generation_batch_size or self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            name = "generation_batch_size" if self.generation_batch_size else "per_device_train_batch_size"
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide the generation batch "
                f"({name} = {batch})"
            )
        return self


class AlignmentRLParams(GRPOParams):
    # R1's second RL stage: reasoning prompts keep their rule rewards, general and harmful prompts are scored by the
    # trained reward model; each prompt gets only the rewards of its kind (the others return None).
    model: str = "models/resft"
    general_data: str = "data/toy/general_train.jsonl"  # general and harmful prompts (`kind` column)
    general_ratio: float = Field(0.5, gt=0, lt=1)  # share of general/harmful prompts in the RL prompt mix
    reward_model: str = "models/reward_model"
    rewards: AlignmentRewardWeights = AlignmentRewardWeights()
    max_steps: PositiveInt = 40
    learning_rate: PositiveFloat = 5e-5
    beta: float = Field(0.1, ge=0)  # KL coefficient


class StudentParams(Section):
    # A distillation student's base, built by `student_base@<name>`: for the toy world a smaller Llama pretrained
    # like the base (these fields override base_model's architecture; the tokenizer is the base's), for the real
    # recipe `source: pretrained` with a model id.
    source: Literal["toy", "pretrained"] = "toy"
    model_name_or_path: str | None = None
    hidden_size: PositiveInt | None = None
    num_layers: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None

    def base_params(self, base: BaseModelParams) -> BaseModelParams:
        """base_model's params with this student's overrides (validated again: sizes must still fit)."""
        return BaseModelParams.model_validate(base.model_dump() | self.model_dump(exclude_none=True))


class DistillParams(SFTParams):
    # R1 stage 6: SFT only (no RL) of smaller students on the teacher's curated data: the rejection-sampling blend
    # (R1's 800k samples) or fresh traces of the final teacher (data/teacher_traces/blend.jsonl).
    model: str = "models/student_base"  # each student starts from models/student_base/<name>
    data: str = "data/rejection_sampling/blend.jsonl"
    teacher: str = "models/alignment_rl"  # a student larger than this model gets a warning
    students: dict[str, StudentParams] = {"small": StudentParams(hidden_size=64, num_layers=4, num_heads=4,
                                                                 intermediate_size=256),
                                          "tiny": StudentParams(hidden_size=32, num_layers=2, num_heads=2,
                                                                intermediate_size=128)}
    epochs: PositiveFloat = 4.0

    @model_validator(mode="after")
    def _some_students(self) -> DistillParams:
        if not self.students:
            raise ValueError("students is empty: name at least one student (name: {base overrides})")
        bad = [name for name in self.students if not name.isidentifier()]
        if bad:
            raise ValueError(f"student names {bad} must be identifiers (they name stages and model directories)")
        return self

    def student(self, name: str) -> StudentSFTParams:
        """The SFT params of one student: this section with `model` set to the student's base."""
        if name not in self.students:
            raise ValueError(f"unknown student '{name}'; distill.students has {sorted(self.students)}")
        fields = self.model_dump(exclude={"students"}) | {"model": f"{self.model}/{name}"}
        return StudentSFTParams.model_validate(fields)


class RegistryParams(Section):
    name: str = "r1-toy"  # MLflow registered model name
    model: str = "alignment_rl"  # the pipeline's final model (a directory under models/, evaluated)
    alias: str = "candidate"  # set on each new version; promotion to champion is the scheduled flow's decision


class RejectionSamplingParams(Section):
    model: str = "models/reasoning_rl"
    data: str = "data/toy/sampling_pool.jsonl"  # the prompt pool, apart from RL's
    num_prompts: PositiveInt | None = 2000  # the first N prompts of `data` (None: all)
    samples_per_prompt: PositiveInt = 4  # k
    temperature: PositiveFloat = 0.7
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: PositiveInt = 96
    min_language_consistency: float = Field(0.95, ge=0, le=1)
    max_completion_tokens: PositiveInt = 90  # drop longer completions
    ngram_size: PositiveInt = 6  # drop completions repeating a run of this many words ...
    max_ngram_repeats: PositiveInt = 2  # ... more often than this
    keep_per_prompt: PositiveInt = 2  # m
    min_kept_samples: int = Field(1, ge=0)  # fail the stage when fewer reasoning samples survive the filters
    non_reasoning_data: str = "data/toy/general_train.jsonl"
    non_reasoning_ratio: float = Field(0.25, ge=0, lt=1)  # share of the blend (R1: ~200k of ~800k)
    shard_size: PositiveInt = 256  # prompts per shard: the unit of resume


class PromptedEval(Section):
    model: str  # a directory under models/
    template_of: str  # a GRPO stage whose prompt_template the model is prompted with (R1-Zero's baseline)


class EvaluateParams(Section):
    models: list[str] = ["base", "cold_start_sft", "reasoning_rl", "resft", "alignment_rl", "distill_small",
                         "distill_tiny", "r1_zero", "student_rl"]
    # Evaluations of a model under another stage's prompt template, by name: the base as R1-Zero prompts it.
    prompted: dict[str, PromptedEval] = {"base_r1_zero_prompt": PromptedEval(model="base", template_of="r1_zero")}
    data: str = "data/toy/test.jsonl"
    general_data: str | None = "data/toy/general_test.jsonl"  # held-out non-reasoning tasks (None: skip)
    limit: int | None = Field(None, ge=2)  # evaluate the first N problems (None: all); intervals need 2 or more
    # n samples a problem: pass@1 (averaged), maj@n, and the pass@k / maj@k / best-of-N curves for k = 1, 2, 4, ..., n
    num_samples: int = Field(4, ge=2)
    bootstrap_resamples: int = Field(2000, ge=200)  # 95% intervals: problems resampled with their samples
    bootstrap_seed: int = 0
    temperature: PositiveFloat = 0.6  # R1's evaluation setting
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: PositiveInt = 96
    reward_model: str = "models/reward_model"  # scores replies to held-out general prompts (helpfulness)

    @property
    def names(self) -> list[str]:
        """Every evaluation: the models, then the prompted ones (stages evaluate@ and evaluate_prompted@)."""
        return [*self.models, *self.prompted]


class GenerationParams(Section):
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: PositiveInt = 64  # prompts x samples per forward batch (hf)
    tensor_parallel_size: PositiveInt = 1  # vllm
    seed: int = 0


# R1-Zero's prompt on the toy world: the question between the words the corpus's R1-form documents use (a header
# asking for the tags, then "Problem: ... Solution:"). The paper's template (Table 1) asks in words a 1 M-parameter
# base never read, and such a base does not follow them; real recipes use the paper's full text (recipes/).
# tests/test_toy_world.py holds it equal to the head of those documents (toy_world.R1_FORM_HEADER).
R1_ZERO_TEMPLATE = "Think in <think> </think>, then give the answer in \\boxed{}.\nProblem: {prompt}\nSolution:"


class SeedsParams(Section):
    # `make seeds` (tasks/seeds.py): the headline deltas under other seeds. Seed s sets toy_world.seed = s and
    # seed = <seed> + s; seed 0 is the workspace's own run. Fixed before looking at any of their numbers.
    seeds: list[int] = Field([0, 1, 2], min_length=2)
    models: list[str] = ["base", "cold_start_sft", "reasoning_rl", "r1_zero"]  # evaluations the deltas need
    prompted: list[str] = ["base_r1_zero_prompt"]
    dir: str = "seeds"  # seeds/seed-<s>/: one folder per seed (not a DVC workspace)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct and not negative, got {seeds}")
        return seeds


# The sections that are GRPO stages (GRPOParams), in pipeline order: the GRPO stage module runs them, the report
# shows their curves.
GRPO_STAGES = ("reasoning_rl", "alignment_rl", "r1_zero", "student_rl")


class Params(Section):
    seed: int = 42
    runtime: RuntimeParams = RuntimeParams()
    tracking: TrackingParams = TrackingParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    prompt: PromptParams = PromptParams()
    generation: GenerationParams = GenerationParams()
    toy_world: ToyWorldParams = ToyWorldParams()
    real_data: RealDataParams = RealDataParams()
    base_model: BaseModelParams = BaseModelParams()
    cold_start_sft: SFTParams = SFTParams()
    reasoning_rl: GRPOParams = GRPOParams()
    rejection_sampling: RejectionSamplingParams = RejectionSamplingParams()
    resft: SFTParams = SFTParams(data="data/rejection_sampling/blend.jsonl", epochs=8.0)
    reward_model: RewardModelParams = RewardModelParams()
    alignment_rl: AlignmentRLParams = AlignmentRLParams()
    teacher_traces: RejectionSamplingParams = RejectionSamplingParams(model="models/alignment_rl", num_prompts=500)
    distill: DistillParams = DistillParams()
    r1_zero: GRPOParams = GRPOParams(model="models/base", rewards=RewardWeights(language_consistency=0.0),
                                     prompt_template=R1_ZERO_TEMPLATE)
    student_cold_start: SFTParams = SFTParams(model="models/student_base/tiny")
    student_rl: GRPOParams = GRPOParams(model="models/student_cold_start")
    evaluate: EvaluateParams = EvaluateParams()
    seeds: SeedsParams = SeedsParams()
    registry: RegistryParams = RegistryParams()
    promotion: PromotionParams = PromotionParams()

    @model_validator(mode="after")
    def _comparable(self) -> Params:
        # R1's distill-vs-RL comparison gives the student's RL the teacher's RL budget.
        if self.student_rl.max_steps != self.reasoning_rl.max_steps:
            raise ValueError(f"student_rl.max_steps ({self.student_rl.max_steps}) must equal reasoning_rl.max_steps "
                             f"({self.reasoning_rl.max_steps}): the distill-vs-RL comparison gives both one RL budget")
        for name, student in self.distill.students.items():
            try:
                base = student.base_params(self.base_model)
            except ValidationError as exc:
                problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ValueError(f"distill.students.{name}: {problems}") from None
            if student.source == "toy":
                warn_if_too_big(f"distill.students.{name}", base.training_memory_bytes())
        unknown = [m for m in self.evaluate.models
                   if m.startswith("distill_") and m.removeprefix("distill_") not in self.distill.students]
        if unknown:
            raise ValueError(f"evaluate.models names {unknown}, but distill.students has "
                             f"{sorted(self.distill.students)}")
        for name, spec in self.evaluate.prompted.items():
            section = getattr(self, spec.template_of, None)
            if name in self.evaluate.models:
                raise ValueError(f"evaluate.prompted.{name}: the name is already in evaluate.models")
            if not isinstance(section, GRPOParams) or section.prompt_template is None:
                raise ValueError(f"evaluate.prompted.{name}.template_of: '{spec.template_of}' is not a GRPO stage "
                                 "with a prompt_template")
        return self

    def stage_section(self, stage: str) -> Section:
        """The params of one stage: its section, or for `distill_<student>` that student's SFT params."""
        if stage.startswith("distill_"):
            return self.distill.student(stage.removeprefix("distill_"))
        return getattr(self, stage)


def memory_bytes() -> int:
    """Memory training can use here: the GPU's when torch is loaded and sees one (stages), else the machine's RAM."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    import psutil

    return psutil.virtual_memory().total


def warn_if_too_big(key: str, needed: int) -> None:
    """A model that cannot be trained here is allowed (params may be meant for a bigger machine), but said at once."""
    available = memory_bytes()
    if needed > available:
        warnings.warn(f"{key}: training it needs at least {needed / 2**30:.1f} GiB (fp32 weights, gradients and "
                      f"Adam states), more than the {available / 2**30:.1f} GiB of memory here", stacklevel=2)


class ParamsError(ValueError):
    """params.yaml is invalid; the message names every offending key."""


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: dict, source: str) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _known_keys(Params, error["loc"])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{key}'{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a check across a section (or sections): its message names the keys
        return f"{source}: {key}: {message}" if error["loc"] else f"{source}: {message}"
    return f"{source}: {key}: {message} (got {error.get('input')!r})"


def section_type(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    annotation = getattr(model.model_fields.get(key), "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def overlay(base: dict[str, Any], changes: dict[str, Any], model: type[BaseModel] = Params) -> dict[str, Any]:
    """`base` with `changes` merged in: a section (what the schema types as one: `reasoning_rl`, its `lora`) is merged
    key by key; any other value, a mapping of names such as `distill.students` included, replaces the base's whole."""
    merged = dict(base)
    for key, value in changes.items():
        section = section_type(model, key)
        if section is not None and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = overlay(merged[key], value, section)
        else:
            merged[key] = value
    return merged


@functools.cache
def _defaults() -> dict[str, Any]:
    return Params().model_dump()


def defaults() -> dict[str, Any]:
    """The schema's defaults as a params tree: the toy world, every stage's own defaults included."""
    return copy.deepcopy(_defaults())


def validate(raw: dict[str, Any], source: str = "params") -> Params:
    """`raw` over the defaults (`overlay`), validated: a key `raw` leaves out is its stage's default."""
    try:
        return Params.model_validate(overlay(defaults(), raw or {}))
    except ValidationError as exc:
        problems = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(problems)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ParamsError(f"{path}: YAML syntax error at {where}: {exc.problem}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return raw or {}


def read_params(path: Path | str, _seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """The keys a params file states; with `extends: <file>`, that file's (read the same way) with these merged in."""
    path = Path(path)
    raw = read_yaml(path)
    base = raw.pop(EXTENDS, None)
    if base is None:
        return raw
    if path.resolve() in _seen:
        raise ParamsError(f"{path}: '{EXTENDS}' makes a cycle of params files")
    return overlay(read_params(path.parent / str(base), _seen | {path.resolve()}), raw)


def load_params(path: Path | str | None = None) -> Params:
    path = Path(path or PARAMS_FILE)
    return validate(read_params(path), source=str(path))


def dump_params(params: Params) -> str:
    """The complete params as YAML, every key spelled out: what DVC reads as params.yaml for a recipe's run."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=120)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted-key overrides (e.g. {"reasoning_rl.max_steps": 5}) merged in."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print the complete, validated params a params file describes.")
    parser.add_argument("file", nargs="?", default=str(PARAMS_FILE), help="a params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        sys.stdout.write(dump_params(load_params(args.file)))
    except ParamsError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
