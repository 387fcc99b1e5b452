"""Stage `reward_model`: a helpfulness + harmlessness reward model from preference pairs (TRL's RewardTrainer).

    python -m tasks.reward_model

Reads `reward_model` in params.yaml: the starting model (a one-score classification head is put on it), the
preference pairs (prompt, chosen, rejected: JSON Lines, see data/README.md), epochs, LoRA. Writes models/reward_model
and metrics/reward_model.json: pairwise accuracy on held-out pairs (the chosen response scored above the rejected
one), overall and per kind (helpfulness, harmlessness) and per flaw of the rejected response. The scores come from
the same scorer that alignment RL and evaluation use (tasks/blocks/model_rewards.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from tasks.blocks import launch, models
from tasks.blocks.data import inputs_fingerprint, read_jsonl, write_json
from tasks.blocks.model_rewards import RewardModelScorer
from tasks.blocks.params import Params, RewardModelParams
from tasks.blocks.rewards import completion_text
from tasks.blocks.stage import stage_main

OUT = Path("models/reward_model")
METRICS = Path("metrics/reward_model.json")


def load_pairs(path: str) -> list[dict]:
    rows = read_jsonl(path, required=("id", "prompt", "chosen", "rejected"))
    for row in rows:
        if completion_text(row["chosen"]).strip() == completion_text(row["rejected"]).strip():
            raise ValueError(f"{path}: pair {row['id']!r} has identical chosen and rejected responses: it teaches "
                             "nothing; fix or drop it")
    return rows


def pairwise_accuracy(scorer: RewardModelScorer, pairs: list[dict]) -> dict:
    """Share of pairs whose chosen response outscores the rejected one, overall and per `kind` and `flaw`."""
    prompts = [row["prompt"] for row in pairs]
    chosen = scorer(prompts, [completion_text(row["chosen"]) for row in pairs])
    rejected = scorer(prompts, [completion_text(row["rejected"]) for row in pairs])
    groups: dict[str, list[bool]] = defaultdict(list)
    for row, good, bad in zip(pairs, chosen, rejected):
        win = good > bad
        groups["pairwise_accuracy"].append(win)
        for key in ("kind", "flaw"):
            if row.get(key):
                groups[f"pairwise_accuracy/{row[key]}"].append(win)
    metrics = {name: sum(wins) / len(wins) for name, wins in groups.items()}
    metrics["mean_margin"] = sum(g - b for g, b in zip(chosen, rejected)) / len(pairs)
    return metrics


def run(stage: str, p: RewardModelParams, params: Params, out: Path = OUT) -> dict:
    models.require_model_dir(p.model)
    train, test = load_pairs(p.data), load_pairs(p.test_data)
    checkpoints = Path("checkpoints/reward_model")
    config = RewardConfig(
        output_dir=str(checkpoints), num_train_epochs=p.epochs, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=p.gradient_accumulation_steps,
        max_length=p.max_length, warmup_steps=p.warmup_steps, lr_scheduler_type="cosine",
        center_rewards_coefficient=p.center_rewards_coefficient, save_steps=p.save_steps, save_total_limit=2,
        gradient_checkpointing=p.gradient_checkpointing, logging_steps=10, report_to=["mlflow"], seed=params.seed,
        model_init_kwargs={"dtype": models.torch_dtype(params.runtime)}, **models.trainer_kwargs(params.runtime),
    )
    tokenizer = models.load_tokenizer(p.model)
    models.require_chat_template(tokenizer, "reward_model.model", p.model)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                                 for r in train])
    trainer = RewardTrainer(model=p.model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=models.lora_config(p.lora, task_type="SEQ_CLS"))
    resume = models.resume_checkpoint(checkpoints, inputs_fingerprint(params, p.model, p.data))
    result = trainer.train(resume_from_checkpoint=resume)
    if not launch.save_once(trainer, out, lambda: models.save_model(trainer.model, tokenizer, out)):
        return {}  # the main process evaluates and reports
    models.write_provenance(out, "reward_model", p.model, p)
    metrics = pairwise_accuracy(RewardModelScorer(out, params.runtime), test)
    return {**metrics, "train_loss": result.training_loss, "train_pairs": len(dataset), "test_pairs": len(test),
            "resumed": int(resume is not None)}


def main() -> None:
    _, metrics = stage_main(("reward_model",), run, __doc__.splitlines()[0], trains=True)
    if metrics is not None:  # None in the launching process and the other ranks: the main rank wrote them
        write_json(METRICS, metrics)


if __name__ == "__main__":
    main()
