"""`make bench`: the speed and memory targets of the pipeline, measured on this machine (never in timed tests).

1. the whole recipe with default params, stage by stage through DVC, in a fresh copy of the repository:
   wall time per stage and in total, peak RSS of any stage process (target: <= 10 min, <= 3 GB on 2 cores);
2. a no-op `dvc repro` once everything is up to date (target: <= 2 s);
3. our GRPO stage vs a bare TRL script with the same model, data and config (target: <= 1.05x);
4. batched HF generation vs one prompt at a time, in tokens/s.
Results are printed and written to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import scratch_flow
from tests.workspace import make_workspace

RESULTS = Path(__file__).with_name("results.json")
GRPO_STEPS = 30  # enough steps that a process's fixed start-up cost does not dominate
# student_rl shares reasoning_rl's RL budget (a params check): both are set, only reasoning_rl runs.
GRPO_OVERRIDES = {"reasoning_rl.max_steps": GRPO_STEPS, "student_rl.max_steps": GRPO_STEPS}


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def stage_order(cwd: Path) -> list[str]:
    out = subprocess.run([sys.executable, "-c", "from flows.pipeline import stage_order; print(*stage_order())"],
                         cwd=cwd, check=True, capture_output=True, text=True).stdout
    return out.split()


def bench_pipeline(ws: Path, env: dict) -> dict:
    stages = {}
    for stage in stage_order(ws):
        stages[stage] = round(timed(["dvc", "repro", "--single-item", stage], ws, env), 1)
        print(f"  {stage}: {stages[stage]} s", flush=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"stage_seconds": stages, "total_seconds": round(sum(stages.values()), 1),
            "peak_rss_gb": round(peak_kb / 2**20, 2)}


def bench_grpo_overhead(ws: Path, env: dict) -> dict:
    """Same steps, model, data and config: our stage vs a bare TRL script, in a scratch copy (ws is untouched)."""
    with tempfile.TemporaryDirectory(prefix="r1-bench-grpo-") as tmp:
        scratch = scratch_flow.rl_workspace(Path(tmp) / "repo", GRPO_OVERRIDES, ws)
        ours = timed([sys.executable, "-m", "tasks.grpo", "reasoning_rl"], scratch, env)
        bare = timed([sys.executable, "-m", "benchmarks.bare_grpo", "models/cold_start_sft", "data/toy/train.jsonl",
                      str(GRPO_STEPS)], scratch, env)
    return {"steps": GRPO_STEPS, "ours_seconds": round(ours, 1), "bare_trl_seconds": round(bare, 1),
            "ratio": round(ours / bare, 3)}


def bench_generation(ws: Path, env: dict) -> dict:
    code = """
import json, time
from tasks.blocks.data import read_jsonl
from tasks.blocks.generation import Sampling, generate
from tasks.blocks.params import load_params
p = load_params()
prompts = [r["prompt"] for r in read_jsonl("data/toy/test.jsonl")[:64]]
sampling = Sampling(n=1, temperature=0.0, max_new_tokens=96)
generate("models/cold_start_sft", prompts[:4], sampling, p.generation, p.runtime)  # warm-up, not timed
out = {}
for name, batch in [("batched_64", 64), ("one_at_a_time", 1)]:
    start = time.monotonic()
    generation = p.generation.model_copy(update={"batch_size": batch})
    samples = generate("models/cold_start_sft", prompts, sampling, generation, p.runtime)
    tokens = sum(s[0].num_tokens for s in samples)
    out[name] = round(tokens / (time.monotonic() - start), 1)
out["speedup"] = round(out["batched_64"] / out["one_at_a_time"], 1)
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=True, capture_output=True, text=True)
    return {"tokens_per_second": json.loads(out.stdout.strip().splitlines()[-1])}


def bench_finished(ws: Path, env: dict) -> dict:
    """The benchmarks that need a finished pipeline in `ws`."""
    return {"noop_repro_seconds": round(timed(["dvc", "repro"], ws, env), 2),
            "generation": bench_generation(ws, env),
            "grpo_vs_bare_trl": bench_grpo_overhead(ws, env)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path,
                        help="a workspace where the pipeline has already run (e.g. after `make run`): skip step 1")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    results: dict = {"cpu_count": os.cpu_count()}
    if args.workspace:
        results.update(bench_finished(args.workspace.resolve(), env))
    else:
        with tempfile.TemporaryDirectory(prefix="r1-bench-") as tmp:
            ws = make_workspace(Path(tmp) / "repo")
            print("pipeline (default params):", flush=True)
            results["pipeline"] = bench_pipeline(ws, env)
            results.update(bench_finished(ws, env))
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key in ("load", "startup"):  # benchmarks/load.py's and benchmarks/startup.py's numbers, measured separately
        if key in stored:
            results[key] = stored[key]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
