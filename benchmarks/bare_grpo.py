"""A bare TRL GRPO script: the same model, data, rewards and config as our `reasoning_rl` stage, none of our code
around the trainer. `make bench` times it against `python -m tasks.grpo reasoning_rl` (target: ours <= 1.05x).

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
rows = [json.loads(line) for line in open(data)]
dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"], "language": "en"} for r in rows])
config = GRPOConfig(
    output_dir="/tmp/bare_grpo", max_steps=steps, learning_rate=p["learning_rate"],
    per_device_train_batch_size=p["per_device_train_batch_size"], num_generations=p["num_generations"],
    max_completion_length=p["max_completion_length"], temperature=p["temperature"], beta=p["beta"],
    num_iterations=p["num_iterations"], loss_type=p["loss_type"], lr_scheduler_type="constant_with_warmup",
    logging_steps=p["logging_steps"], gradient_checkpointing=p["gradient_checkpointing"], save_strategy="no",
    report_to=[], use_cpu=True, bf16=False, seed=42,
)
trainer = GRPOTrainer(model=model, reward_funcs=[accuracy_reward, format_reward, language_consistency_reward],
                      args=config, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model))
trainer.train()
