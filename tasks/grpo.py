"""GRPO stages (`reasoning_rl`; later `alignment_rl`, `r1_zero`, `student_rl`): TRL's GRPOTrainer, one recipe.

    python -m tasks.grpo reasoning_rl

Reads the stage's section of params.yaml (starting `model`, prompt `data`, reward weights, the GRPO knobs), trains
with rule-based rewards from tasks/rewards.py and writes a plain model directory to models/<stage>, plus the
per-step training curve (rewards per function, KL, completion length, loss) to plots/<stage>.csv for DVC plots.
Checkpoints go to checkpoints/<stage> every `save_steps`; a re-run after a crash resumes from the newest one.
"""

from __future__ import annotations

import csv
from pathlib import Path

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tasks import models, rewards
from tasks.data import inputs_fingerprint, read_jsonl
from tasks.generation import with_system_prompt
from tasks.params import GRPOParams, Params
from tasks.tracking import run_stage_cli

GRPO_STAGES = ("reasoning_rl",)
CURVE_KEYS = ("step", "reward", "reward_std", "rewards/accuracy_reward/mean", "rewards/format_reward/mean",
              "rewards/language_consistency_reward/mean", "completions/mean_length", "completions/clipped_ratio",
              "kl", "entropy", "loss")


def load_prompts(p: GRPOParams, params: Params) -> Dataset:
    rows = read_jsonl(p.data, required=("id", "prompt", "answer"), limit=p.num_prompts)
    return Dataset.from_list([{"prompt": with_system_prompt(r["prompt"], params.prompt.system),
                               "answer": str(r["answer"]), "language": params.prompt.language} for r in rows])


def grpo_config(stage: str, p: GRPOParams, params: Params, reward_weights: list[float]) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(Path("checkpoints") / stage), max_steps=p.max_steps, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.per_device_train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, num_generations=p.num_generations,
        generation_batch_size=p.generation_batch_size, max_completion_length=p.max_completion_length,
        temperature=p.temperature, top_p=p.top_p, beta=p.beta, epsilon=p.epsilon, num_iterations=p.num_iterations,
        loss_type=p.loss_type, scale_rewards=p.scale_rewards, reward_weights=reward_weights,
        warmup_steps=p.warmup_steps, lr_scheduler_type="constant_with_warmup", logging_steps=p.logging_steps,
        save_steps=p.save_steps, save_total_limit=2, gradient_checkpointing=p.gradient_checkpointing,
        report_to=["mlflow"], seed=params.seed, use_vllm=p.use_vllm, vllm_mode=p.vllm_mode,
        model_init_kwargs={"dtype": models.torch_dtype(params.runtime)}, **models.trainer_kwargs(params.runtime),
    )


def write_curve(log_history: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(entry for entry in log_history if "reward" in entry)


def run(stage: str, p: GRPOParams, params: Params, out: Path) -> dict:
    models.require_model_dir(p.model)
    weights = {name: w for name, w in p.rewards.model_dump().items() if w > 0}
    trainer = GRPOTrainer(
        model=p.model, reward_funcs=rewards.get_reward_funcs(list(weights)),
        args=grpo_config(stage, p, params, list(weights.values())), train_dataset=load_prompts(p, params),
        processing_class=models.load_tokenizer(p.model), peft_config=models.lora_config(p.lora),
    )
    resume = models.resume_checkpoint(Path(trainer.args.output_dir), inputs_fingerprint(p, p.model, p.data))
    trainer.train(resume_from_checkpoint=resume)
    models.save_model(trainer.model, trainer.processing_class, out)
    models.write_provenance(out, stage, p.model, p)
    write_curve(trainer.state.log_history, Path("plots") / f"{stage}.csv")
    last = [e for e in trainer.state.log_history if "reward" in e][-1]
    return {"final_reward": last["reward"], "final_completion_length": last["completions/mean_length"],
            "steps": trainer.state.global_step, "resumed": int(resume is not None)}


def main() -> None:
    run_stage_cli(GRPO_STAGES, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
