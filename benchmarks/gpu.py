"""`make bench-gpu`: the recipe's stages on one GPU, in bf16, on a real small model layout.

    python -m benchmarks.gpu                  # on a CUDA machine: Qwen2.5-0.5B-sized Llama (24 layers, hidden 896)
    python -m benchmarks.gpu --layout tiny --device cpu   # the same path in a minute on CPU (a dry run)
    python -m benchmarks.gpu --set runtime.accelerate_config=configs/accelerate/fsdp.yaml   # under accelerate

In a scratch copy of the project (your models/ and data/ are untouched) it runs prepare_data, base_model (the toy
tokenizer, a model of the chosen layout pretrained on the toy corpus), cold_start_sft and reasoning_rl (GRPO) as
`python -m tasks.<stage>` with a generated params file, then times HF generation (the evaluation setting: k samples
at T 0.6). It reports the wall time of each stage, GRPO seconds per step (TRL's train_runtime / steps, from the
stage's MLflow run), generation tokens/s and peak GPU memory, and writes benchmarks/results_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tasks.blocks.params import apply_overrides, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results_gpu.json")
STAGES = [["tasks.prepare_data"], ["tasks.base_model"], ["tasks.sft", "cold_start_sft"], ["tasks.grpo", "reasoning_rl"]]

# Qwen2.5-0.5B's transformer shape (hidden 896, 24 layers, 14 heads, MLP 4864) as a Llama with the toy tokenizer:
# 0.39 B parameters, the compute of a real small model without a hub download.
LAYOUTS = {
    "qwen0.5b": {"base_model.hidden_size": 896, "base_model.num_layers": 24, "base_model.num_heads": 14,
                 "base_model.intermediate_size": 4864, "base_model.learning_rate": 3.0e-4,
                 "base_model.batch_size": 64, "base_model.epochs": 1.0,
                 "cold_start_sft.learning_rate": 1.0e-5, "cold_start_sft.epochs": 1.0,
                 "reasoning_rl.learning_rate": 1.0e-6},
    "tiny": {"base_model.hidden_size": 32, "base_model.num_layers": 2, "base_model.num_heads": 2,
             "base_model.intermediate_size": 64, "base_model.epochs": 1.0, "cold_start_sft.epochs": 1.0,
             "toy_world.general_docs": 50},
}


def params_for(layout: str, device: str, grpo_steps: int, extra: dict | None = None) -> dict:
    overrides = {**LAYOUTS[layout], **(extra or {}), "runtime.device": device, "reasoning_rl.max_steps": grpo_steps,
                 "student_rl.max_steps": grpo_steps,
                 "reasoning_rl.logging_steps": 1, "reasoning_rl.save_steps": 1000, "cold_start_sft.save_steps": 10000}
    raw = apply_overrides(read_yaml(ROOT / "params.yaml"), overrides)
    validate(raw, source="benchmarks/gpu.py params")  # a bad override fails here, not after minutes of training
    return raw


def scratch_copy(dest: Path, raw_params: dict) -> None:
    shutil.copytree(ROOT / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "extra", dest / "data" / "extra")
    shutil.copytree(ROOT / "configs", dest / "configs")
    (dest / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))


def stage_seconds(ws: Path, env: dict) -> dict:
    seconds = {}
    for cmd in STAGES:
        name = cmd[-1].removeprefix("tasks.")
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", *cmd], cwd=ws, env=env, check=True)
        seconds[name] = round(time.monotonic() - start, 1)
        print(f"== {name}: {seconds[name]} s", flush=True)
    return seconds


def grpo_step_seconds(ws: Path, env: dict) -> dict:
    code = """
import json, mlflow
run = mlflow.search_runs(filter_string="tags.stage = 'reasoning_rl'", search_all_experiments=True,
                         output_format="list")[0]
m = run.data.metrics
print(json.dumps({"train_runtime": m["train_runtime"], "steps": m.get("steps")}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=True, capture_output=True, text=True)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    return {"train_seconds": round(metrics["train_runtime"], 1), "steps": int(metrics["steps"]),
            "seconds_per_step": round(metrics["train_runtime"] / metrics["steps"], 2)}


def generation_tokens_per_second(ws: Path, env: dict) -> dict:
    code = """
import json, time, torch
from tasks.blocks.data import read_jsonl
from tasks.blocks.generation import Generator, Sampling
from tasks.blocks.params import load_params
p = load_params()
prompts = [r["prompt"] for r in read_jsonl(p.evaluate.data)]
generator = Generator("models/cold_start_sft", p.generation, p.runtime)
generator(prompts[:8], Sampling(n=1, max_new_tokens=16))  # warm-up, not timed
out = {"prompts": len(prompts)}
for batch in (64, 256):
    generator.gen = p.generation.model_copy(update={"batch_size": batch})
    sampling = Sampling(n=p.evaluate.num_samples, temperature=p.evaluate.temperature, top_p=p.evaluate.top_p,
                        max_new_tokens=p.evaluate.max_new_tokens)
    start = time.monotonic()
    samples = generator(prompts, sampling)
    seconds = time.monotonic() - start
    out[f"hf_batch_{batch}"] = round(sum(s.num_tokens for row in samples for s in row) / seconds, 1)
from tasks.blocks import models
out["base_parameters"] = models.count_parameters_on_disk("models/base")
out["precision"] = models.precision(p.runtime)
if torch.cuda.is_available():
    out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="qwen0.5b")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override on top of the layout's, e.g. runtime.accelerate_config=...")
    parser.add_argument("--no-generation", action="store_true", help="skip the generation timing")
    args = parser.parse_args()
    extra = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    if args.device == "cuda" and device_name() == "cpu":
        parser.error("no CUDA device here: run on a GPU machine, or pass --layout tiny --device cpu for a dry run")
    raw = params_for(args.layout, args.device, args.grpo_steps, extra)
    with tempfile.TemporaryDirectory(prefix="r1-bench-gpu-") as tmp:
        ws = Path(tmp)
        scratch_copy(ws, raw)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ws), os.environ.get("PYTHONPATH")])),
               "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db",
               "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}
        results = {"device": device_name(), "layout": args.layout, "overrides": args.set,
                   "stage_seconds": stage_seconds(ws, env)}
        results["grpo"] = grpo_step_seconds(ws, env) | {
            "per_device_train_batch_size": raw["reasoning_rl"]["per_device_train_batch_size"],
            "num_generations": raw["reasoning_rl"]["num_generations"],
            "max_completion_length": raw["reasoning_rl"]["max_completion_length"]}
        if not args.no_generation:
            results["generation_tokens_per_second"] = generation_tokens_per_second(ws, env)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
