"""A bare TRL GRPO script: the same model, data, rewards and config as our `reasoning_rl` stage (its dev evaluation and
checkpoints too), none of our code around the trainer. `make bench` times it against `python -m tasks.grpo
reasoning_rl` (target: ours <= 1.05x).

    python -m benchmarks.bare_grpo <model_dir> <train.jsonl> <max_steps>
"""

import json
import sys

import yaml
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from tasks.blocks.rewards import accuracy_reward, format_reward, language_consistency_reward

model, data, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = yaml.safe_load(open("params.yaml"))["reasoning_rl"]


def prompts(path: str, limit: int | None = None) -> Dataset:
    rows = [json.loads(line) for line in open(path)][:limit]
    return Dataset.from_list([{"prompt": r["prompt"], "answer": str(r["answer"]), "language": "en"} for r in rows])


# The knobs our stage passes (tasks/grpo.py grpo_config), the dev evaluation and checkpoints included: that is
# TRL's work, which both do; only MLflow reporting is left out (it is ours).
config = GRPOConfig(
    output_dir="/tmp/bare_grpo", max_steps=steps, learning_rate=p["learning_rate"],
    per_device_train_batch_size=p["per_device_train_batch_size"],
    gradient_accumulation_steps=p["gradient_accumulation_steps"], num_generations=p["num_generations"],
    generation_batch_size=p["generation_batch_size"], max_completion_length=p["max_completion_length"],
    temperature=p["temperature"], top_p=p["top_p"], beta=p["beta"], epsilon=p["epsilon"],
    num_iterations=p["num_iterations"], loss_type=p["loss_type"], scale_rewards=p["scale_rewards"],
    reward_weights=[p["rewards"][name] for name in ("accuracy", "format", "language_consistency")],
    warmup_steps=p["warmup_steps"], lr_scheduler_type="constant_with_warmup", logging_steps=p["logging_steps"],
    eval_strategy="steps", eval_steps=p["eval_steps"], eval_on_start=True,
    per_device_eval_batch_size=p["per_device_train_batch_size"], num_generations_eval=p["num_generations_eval"],
    save_steps=p["save_steps"], save_total_limit=2, gradient_checkpointing=p["gradient_checkpointing"],
    report_to=[], use_cpu=True, bf16=False, seed=42,
)
trainer = GRPOTrainer(model=model, reward_funcs=[accuracy_reward, format_reward, language_consistency_reward],
                      args=config, train_dataset=prompts(data), eval_dataset=prompts(p["dev_data"], p["dev_prompts"]),
                      processing_class=AutoTokenizer.from_pretrained(model))
trainer.train()
trainer.save_model("/tmp/bare_grpo/final")
