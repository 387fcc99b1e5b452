"""Stage `base_model`: the model every later stage starts from, written to models/base.

- source "toy": train a byte-level BPE tokenizer on the toy corpus and pretrain a tiny LlamaForCausalLM on it
  (plain text, no chat format) with TRL's SFTTrainer in packed language-modelling mode.
- source "pretrained": resolve a Hugging Face id or a local directory (`model_name_or_path`) and save it as the
  base, with its own tokenizer and chat template.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from tasks import models
from tasks.data import read_jsonl
from tasks.params import Params, load_params
from tasks.tracking import stage_run

CORPUS = Path("data/toy/corpus.jsonl")
COLD_START = Path("data/toy/cold_start.jsonl")
OUT = Path("models/base")
CHECKPOINTS = Path("checkpoints/base_model")


def pretrain_toy(params: Params, corpus: Path, cold_start: Path, out: Path) -> dict:
    p = params.base_model
    texts = [row["text"] for row in read_jsonl(corpus, required=("id", "text"))]
    # The tokenizer also sees the R1-format completions, so "\boxed{" and friends get merges of their own.
    completions = [row["completion"][-1]["content"] for row in read_jsonl(cold_start, required=("completion",))]
    tokenizer = models.build_toy_tokenizer(texts + completions, p.vocab_size)
    model = LlamaForCausalLM(models.tiny_llama_config(p, tokenizer))
    config = SFTConfig(
        output_dir=str(CHECKPOINTS), num_train_epochs=p.epochs, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size, max_length=p.seq_len, packing=True,
        packing_strategy="wrapped", dataset_text_field="text", lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.01, gradient_checkpointing=p.gradient_checkpointing, logging_steps=20, save_strategy="no",
        report_to=["mlflow"], seed=params.seed,
        disable_tqdm=False, **models.trainer_kwargs(params.runtime),
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer)
    result = trainer.train()
    models.save_model(trainer.model, tokenizer, out)
    return {"parameters": models.count_parameters(model), "vocab_size": len(tokenizer),
            "train_loss": result.training_loss, "train_perplexity": math.exp(min(result.training_loss, 20))}


def resolve_pretrained(params: Params, out: Path) -> dict:
    name = params.base_model.model_name_or_path
    tokenizer = models.load_tokenizer(name)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=models.torch_dtype(params.runtime))
    models.save_model(model, tokenizer, out)
    return {"parameters": models.count_parameters(model), "vocab_size": len(tokenizer)}


def run(params: Params, out: Path = OUT) -> dict:
    if params.base_model.source == "toy":
        metrics = pretrain_toy(params, CORPUS, COLD_START, out)
    else:
        metrics = resolve_pretrained(params, out)
    models.write_provenance(out, "base_model", params.base_model.model_name_or_path, params.base_model)
    return metrics


def main() -> None:
    params = load_params()
    with stage_run("base_model", params.base_model, params.tracking.experiment):
        mlflow.log_metrics(run(params))


if __name__ == "__main__":
    main()
