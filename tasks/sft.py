"""SFT stages (`cold_start_sft`, `resft`, `distill_<student>`, `student_cold_start`): TRL's SFTTrainer, one recipe.

    python -m tasks.sft cold_start_sft
    python -m tasks.sft distill_tiny       # R1 stage 6: a student (distill.students) on the teacher's data

Reads the stage's section of params.yaml (starting `model`, `data`, epochs, LoRA...), trains on prompt/completion
rows (loss on the completion only) and writes a plain model directory to models/<stage>. Checkpoints go to
checkpoints/<stage> every `save_steps`; a re-run after a crash resumes from the newest one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from tasks.blocks import launch, models
from tasks.blocks.data import inputs_fingerprint, read_jsonl
from tasks.blocks.generation import with_system_prompt
from tasks.blocks.params import Params, ParamsError, SFTParams, StudentSFTParams
from tasks.blocks.stage import stage_main

SFT_STAGES = ("cold_start_sft", "resft", "distill_*", "student_cold_start")


def load_sft_dataset(path: str, system: str) -> Dataset:
    rows = read_jsonl(path, required=("id", "prompt", "completion"))
    return Dataset.from_list([{"prompt": with_system_prompt(r["prompt"], system), "completion": r["completion"]}
                              for r in rows])


def warn_if_larger(student: str, teacher: str) -> None:
    """R1 distils into smaller models; a student bigger than its teacher is allowed, but likely a params slip."""
    sizes = {path: models.count_parameters_on_disk(path) for path in (student, teacher) if Path(path).is_dir()}
    if len(sizes) == 2 and sizes[student] > sizes[teacher]:
        warnings.warn(f"student {student} ({sizes[student]:,} parameters) is larger than its teacher {teacher} "
                      f"({sizes[teacher]:,})", stacklevel=2)


def require_assistant_masks(tokenizer, stage: str, p: SFTParams) -> None:
    """With `assistant_only_loss`, the chat template must mark the assistant's tokens ({% generation %}) or be one
    TRL has a marked training version of; said before the model loads, naming the param."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not p.assistant_only_loss or has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise ParamsError(f"{stage}.assistant_only_loss: the chat template of {p.model} has no {{% generation %}} "
                          "markers around the assistant's reply, and TRL has no training version of it: add the "
                          "markers to the template, or set it to false (the loss then covers the completion, as for "
                          "any prompt/completion row)") from None


def run(stage: str, p: SFTParams, params: Params, out: Path) -> dict:
    models.require_model_dir(p.model)
    tokenizer = models.load_tokenizer(p.model)
    models.require_chat_template(tokenizer, f"{stage}.model", p.model)
    require_assistant_masks(tokenizer, stage, p)
    dataset = load_sft_dataset(p.data, params.prompt.system)
    if isinstance(p, StudentSFTParams):
        warn_if_larger(p.model, p.teacher)
    checkpoints = Path("checkpoints") / stage
    config = SFTConfig(
        output_dir=str(checkpoints), num_train_epochs=p.epochs, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=p.gradient_accumulation_steps,
        max_length=p.max_length, warmup_steps=p.warmup_steps, lr_scheduler_type="cosine",
        save_steps=p.save_steps, save_total_limit=2, gradient_checkpointing=p.gradient_checkpointing, logging_steps=10,
        report_to=["mlflow"], seed=params.seed, assistant_only_loss=p.assistant_only_loss,
        model_init_kwargs={"dtype": models.torch_dtype(params.runtime)}, **models.trainer_kwargs(params.runtime),
    )
    trainer = SFTTrainer(model=p.model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=models.lora_config(p.lora))
    resume = models.resume_checkpoint(checkpoints, inputs_fingerprint(params, p.model, p.data))
    result = trainer.train(resume_from_checkpoint=resume)
    if launch.save_once(trainer, out, lambda: models.save_model(trainer.model, tokenizer, out)):
        models.write_provenance(out, stage, p.model, p)
    return {"train_loss": result.training_loss, "train_rows": len(dataset), "resumed": int(resume is not None),
            "world_size": trainer.accelerator.num_processes}


def main() -> None:
    stage_main(SFT_STAGES, run, __doc__.splitlines()[0], trains=True)


if __name__ == "__main__":
    main()
