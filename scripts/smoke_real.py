"""`make smoke-real`: the whole chain on the two real-tokenizer models, a few steps per stage, then the ladder.

    python scripts/smoke_real.py                 # after `make smollm2` and `make real-tokenizer`
    python scripts/smoke_real.py --keep /tmp/ws  # keep the workspace (models, MLflow store) there

recipes/smollm2-135m.yaml with smoke-sized overrides (OVERRIDES below, and tests/integration/smoke.yaml's toy-world
sizes for the non-reasoning stand-ins): SmolLM2-135M-Instruct (dequantized Q4_1, `make smollm2`) is the base and
teacher; the distillation student is the tiny random Qwen2.5-shaped model with the real Qwen2.5 tokenizer
(`make real-tokenizer`, tasks/real_tokenizer.py), resolved as a pretrained student (another tokenizer than the
teacher's: the student is trained on the teacher's text). It runs in a scratch copy of the repository (a fresh git +
DVC repo, its own MLflow store and Prefect home; this checkout's models/, data/, params.yaml and dvc.lock are not
touched) through the Prefect flow, one DVC stage per task, as `make run` does. GSM8K comes from ../shared/data.

It prints the flow's ladder, each stage's wall time (from its MLflow run) and the total, and writes them to
reports/smoke_real/ (ladder.md, stages.json). A few steps on a handful of problems: the numbers show that every
stage runs on real weights and a real tokenizer, not what the recipe does to the model (docs/real-models.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import scratch_flow  # noqa: E402  (after the repository root is on the path)
from tasks import real_tokenizer, smollm2  # noqa: E402

RECIPE = ROOT / "recipes" / "smollm2-135m.yaml"
SMOKE = ROOT / "tests" / "integration" / "smoke.yaml"
OUT = ROOT / "reports" / "smoke_real"
STUDENT = ".cache/tiny-qwen2.5"  # in the workspace

GRPO = {"num_prompts": 4, "max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "num_generations": 2, "max_completion_length": 32, "dev_prompts": 2, "logging_steps": 1, "save_steps": 1}
SFT = {"epochs": 0.0002, "batch_size": 2, "max_length": 256, "save_steps": 50}  # one step: 2 of GSM8K's 7,473
SAMPLING = {"num_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 32, "max_completion_tokens": 32,
            "shard_size": 8, "min_kept_samples": 0}
OVERRIDES = {
    "orchestration.retries": 0,
    **{f"cold_start_sft.{k}": v for k, v in SFT.items()},
    **{f"{stage}.{k}": v for stage in ("reasoning_rl", "alignment_rl", "r1_zero", "student_rl")
       for k, v in GRPO.items()},
    **{f"{stage}.{k}": v for stage in ("rejection_sampling", "teacher_traces") for k, v in SAMPLING.items()},
    # The blend is every non-reasoning row when rejection sampling keeps no reasoning sample (a few 32-token samples
    # of a 135 M model on GSM8K: none is correct), 287 in the smoke-sized toy world: a few rows of it.
    "resft.epochs": 0.005, "resft.batch_size": 2, "resft.max_length": 256, "resft.save_steps": 50,
    "reward_model.epochs": 0.002, "reward_model.batch_size": 4, "reward_model.max_length": 256,  # 4 of 1,782 pairs
    "distill.students": {"qwen": {"source": "pretrained", "model_name_or_path": STUDENT}},
    "distill.epochs": 0.02, "distill.batch_size": 2, "distill.max_length": 256, "distill.save_steps": 50,
    "student_cold_start.model": "models/student_base/qwen",
    **{f"student_cold_start.{k}": v for k, v in SFT.items()},
    "evaluate.models": ["base", "cold_start_sft", "reasoning_rl", "alignment_rl", "distill_qwen", "r1_zero",
                        "student_rl"],
    "evaluate.limit": 6, "evaluate.num_samples": 2, "evaluate.max_new_tokens": 32,
    "registry.name": "r1-smoke-real",
}


def smoke_params(model_dir: Path) -> dict:
    """The recipe with the smoke overrides (and smoke.yaml's toy-world sizes), validated: every key spelled out."""
    toy = {k: v for k, v in yaml.safe_load(SMOKE.read_text()).items() if k.startswith("toy_world.")}
    return scratch_flow.recipe_params(RECIPE, {**toy, **OVERRIDES, "base_model.model_name_or_path": str(model_dir)},
                                      "scripts/smoke_real.py's overrides")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it (default: a deleted tmp dir)")
    args = parser.parse_args()
    try:
        files = real_tokenizer.fetch()
        model_dir = smollm2.converted()
    except real_tokenizer.FetchError as exc:
        sys.exit(f"error: {exc}")
    if model_dir is None:
        sys.exit(f"error: {smollm2.model_dir()} is missing: run `make smollm2` first")
    with scratch_flow.scratch_base(args.keep, "r1-smoke-real-") as base:
        workspace, env = scratch_flow.prepare(base, smoke_params(model_dir))
        real_tokenizer.build_tiny_model(workspace / STUDENT, files[real_tokenizer.GGUF], ends_turns=0.25)
        code, total = scratch_flow.run_flow(workspace, env)
        times = scratch_flow.stage_times(workspace)
        OUT.mkdir(parents=True, exist_ok=True)
        ladder = workspace / "plots" / "ladder.md"
        (OUT / "ladder.md").unlink(missing_ok=True)
        if ladder.exists():
            shutil.copy(ladder, OUT / "ladder.md")
        (OUT / "stages.json").write_text(json.dumps({"total_seconds": round(total, 1), "flow_exit_code": code,
                                                     "stage_seconds": times}, indent=2) + "\n")
        scratch_flow.print_stage_times(times, total)
        print(f"Written to {OUT}")
        if code:
            sys.exit(f"error: the flow failed (exit code {code})")


if __name__ == "__main__":
    main()
