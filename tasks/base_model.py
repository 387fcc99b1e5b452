"""Stage `base_model`: the model every later stage starts from, written to models/base; and, with `--student NAME`,
stage `student_base@NAME`: the base of a smaller distillation student, written to models/student_base/NAME.

    python -m tasks.base_model
    python -m tasks.base_model --student tiny

- source "toy": train a byte-level BPE tokenizer on the toy corpus and pretrain a tiny LlamaForCausalLM on it
  (plain text, no chat format, one whole document per row) with TRL's SFTTrainer in language-modelling mode.
  Checkpoints go to checkpoints/<stage> ten times a run; a re-run after a crash resumes from the newest one (the
  tokenizer, trained again from the same corpus, is the same, and so are the weights of a run without the crash).
- source "pretrained": resolve a Hugging Face id or a local directory (`model_name_or_path`) and save it as the
  base, with its own tokenizer and chat template.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from datasets import Dataset
from transformers import LlamaForCausalLM, set_seed
from trl import SFTConfig, SFTTrainer

from tasks.blocks import models
from tasks.blocks.data import inputs_fingerprint, read_jsonl
from tasks.blocks.params import BaseModelParams, Params, StudentParams, load_params
from tasks.blocks.stage import run_stage

CORPUS = Path("data/toy/corpus.jsonl")
COLD_START = Path("data/toy/cold_start.jsonl")
OUT = Path("models/base")
CHECKPOINTS = Path("checkpoints/base_model")
# When the pretraining checkpoints, as a share of its steps (Trainer's `save_steps` below 1): a kill costs at most a
# tenth of it. Not a param: it changes no output (the weights are the same with or without checkpoints).
CHECKPOINT_EVERY = 0.1


def pretrain_toy(p: BaseModelParams, params: Params, texts: list[str], tokenizer, checkpoints: Path,
                 out: Path, fingerprint: str) -> dict:
    """Pretrain a tiny Llama on `texts`, resuming from the newest checkpoint of the same inputs (`fingerprint`)."""
    set_seed(params.seed)  # the initial weights: torch's generator starts from a random seed in each process
    model = LlamaForCausalLM(models.tiny_llama_config(p, tokenizer))
    config = SFTConfig(
        output_dir=str(checkpoints), num_train_epochs=p.epochs, learning_rate=p.learning_rate,
        # One document per row, never cut: packed and wrapped at seq_len, most worked problems were split, and the
        # model learnt to write solutions without their problem in view (it could not copy a problem's numbers).
        per_device_train_batch_size=p.batch_size, max_length=p.seq_len, packing=False, dataset_text_field="text",
        lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.01, gradient_checkpointing=p.gradient_checkpointing, logging_steps=20,
        save_steps=CHECKPOINT_EVERY, save_total_limit=2,
        report_to=["mlflow"], seed=params.seed,
        disable_tqdm=False, **models.trainer_kwargs(params.runtime),
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer)
    resume = models.resume_checkpoint(checkpoints, fingerprint)
    result = trainer.train(resume_from_checkpoint=resume)
    models.save_model(trainer.model, tokenizer, out)
    return {"parameters": models.count_parameters(model), "vocab_size": len(tokenizer),
            "train_loss": result.training_loss, "train_perplexity": math.exp(min(result.training_loss, 20)),
            "resumed": int(resume is not None)}


def corpus_texts(corpus: Path) -> list[str]:
    return [row["text"] for row in read_jsonl(corpus, required=("id", "text"))]


def resolve_pretrained(name: str, params: Params, out: Path, key: str = "base_model.model_name_or_path") -> dict:
    tokenizer, model = models.load_pretrained(name, key, params.runtime)  # a model id, directory or plain GGUF
    models.save_model(model, tokenizer, out)
    return {"parameters": models.count_parameters(model), "vocab_size": len(tokenizer)}


def run(stage: str, p: BaseModelParams | StudentParams, params: Params, out: Path = OUT) -> dict:
    """The base model (`base_model`), or a distillation student's base (`student_base_<name>`)."""
    if stage != "base_model":
        return student_base(stage.removeprefix("student_base_"), params, out)
    if p.source == "toy":
        texts = corpus_texts(CORPUS)
        # The tokenizer also sees the R1-format completions, so "\boxed{" and friends get merges of their own.
        completions = [row["completion"][-1]["content"] for row in read_jsonl(COLD_START, required=("completion",))]
        tokenizer = models.build_toy_tokenizer(texts + completions, p.vocab_size)
        metrics = pretrain_toy(p, params, texts, tokenizer, CHECKPOINTS, out,
                               inputs_fingerprint(params, CORPUS, COLD_START))
    else:
        metrics = resolve_pretrained(p.model_name_or_path, params, out)
    models.write_provenance(out, "base_model", p.model_name_or_path, p)
    return metrics


def student_base(name: str, params: Params, out: Path) -> dict:
    """A distillation student's base: a smaller toy Llama pretrained on the same corpus with the base's tokenizer
    (so it reads the teacher's data token for token), or a pretrained model id."""
    student = params.distill.students[name]
    p = student.base_params(params.base_model)
    if student.source == "toy":
        models.require_model_dir(OUT)
        metrics = pretrain_toy(p, params, corpus_texts(CORPUS), models.load_tokenizer(OUT),
                               CHECKPOINTS.with_name(f"student_base_{name}"), out,
                               inputs_fingerprint(params, CORPUS, OUT))
    else:
        metrics = resolve_pretrained(p.model_name_or_path, params, out, f"distill.students.{name}.model_name_or_path")
    models.write_provenance(out, f"student_base@{name}", p.model_name_or_path or str(OUT), p)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", help="build this distillation student's base (distill.students) instead")
    student = parser.parse_args().student
    params = load_params()
    if student is None:
        run_stage("base_model", "base_model", params.base_model, params, run, OUT)
        return
    try:
        params.distill.student(student)  # the one check (and message) for an unknown student
    except ValueError as exc:
        parser.error(str(exc))
    run_stage(f"student_base@{student}", f"student_base_{student}", params.distill.students[student], params, run,
              Path(params.distill.model) / student)


if __name__ == "__main__":
    main()
