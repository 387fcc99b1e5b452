"""`make bench` (startup): each stage kind's fixed cost on smoke-sized params, in a fresh workspace.

Fixed cost = process start to the first unit of work (a training step, a generation call; for stages without
one, the stage's body) + the end of the last unit to process exit (saving, provenance, MLflow). Each stage runs as
DVC runs it, `python -m tasks.<module> <args>`, under benchmarks/stage_probe.py, which time-stamps its phases:

    start     process start -> `stage_run` entered: interpreter, imports, params
    mlflow    -> the stage's MLflow run open (tracking store, orphan reaping, params logged)
    pre       -> the first unit of work (model and data loading, trainer set-up)
    work      the units of work (not fixed cost)
    post      the end of the last unit -> the stage's body done (saving, provenance)
    close     -> MLflow run ended
    exit      -> process gone (interpreter teardown)

The store is seeded with `--store-runs` finished runs first, so that set-up that scales with its size shows.
`python -m benchmarks.startup [--repeat N]` prints the table and writes benchmarks/results.json["startup"].
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.workspace import make_workspace

RESULTS = Path(__file__).with_name("results.json")
SMOKE = Path(__file__).resolve().parents[1] / "tests" / "integration" / "smoke.yaml"
TARGET_SECONDS = 4.0
# Each stage kind once, in an order where each finds its inputs: (name, module, args).
STAGES = [
    ("prepare_data", "tasks.prepare_data", []),
    ("base_model", "tasks.base_model", []),
    ("sft", "tasks.sft", ["cold_start_sft"]),
    ("grpo", "tasks.grpo", ["reasoning_rl"]),
    ("rejection_sampling", "tasks.rejection_sampling", ["rejection_sampling"]),
    ("reward_model", "tasks.reward_model", []),
    ("evaluate", "tasks.evaluate", ["base"]),
    ("ladder", "tasks.evaluate", ["--ladder"]),
    ("register", "tasks.register", []),
    ("report", "tasks.report", []),
]
OVERRIDES = {"reward_model.model": "models/base", "evaluate.models": ["base"], "evaluate.prompted": {},
             "registry.model": "base"}
PHASES = ("start", "mlflow", "pre", "work", "post", "close", "exit")


def phases(launched: float, marks: list[dict], exited: float) -> dict[str, float]:
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for m in marks:
        first.setdefault(m["mark"], m["t"])
        last[m["mark"]] = m["t"]
    if "setup_start" not in first:  # no MLflow run (the ladder): the whole process is fixed cost
        first["setup_start"] = first["work_start"] = last["work_end"] = last["run_closed"] = exited
    work_start, work_end = first["work_start"], last["work_end"]
    unit_start, unit_end = first.get("unit_start", work_start), last.get("unit_end", work_end)
    points = [launched, first["setup_start"], work_start, unit_start, unit_end, work_end, last["run_closed"], exited]
    out = {name: round(b - a, 2) for name, a, b in zip(PHASES, points, points[1:])}
    out["fixed"] = round(sum(v for k, v in out.items() if k != "work"), 2)
    return out


def run_stage(ws: Path, env: dict, module: str, args: list[str]) -> dict[str, float]:
    probe = ws / ".probe.jsonl"
    probe.unlink(missing_ok=True)
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "benchmarks.stage_probe", module, *args], cwd=ws, check=False,
                          env={**env, "R1_PROBE_FILE": str(probe)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    exited = time.time()
    if done.returncode:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return phases(launched, [json.loads(line) for line in probe.read_text().splitlines()], exited)


def seed_store(ws: Path, env: dict, runs: int) -> None:
    code = f"""
import mlflow
from tasks.blocks.params import load_params
mlflow.set_tracking_uri("sqlite:///mlflow.db")
mlflow.set_experiment(load_params().tracking.experiment)
for i in range({runs}):
    with mlflow.start_run(run_name=f"old-{{i}}", tags={{"stage": "old"}}):
        mlflow.log_metrics({{"loss": 1.0, "reward": 0.5}})
"""
    subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=True, capture_output=True)


def imports_floor(env: dict, first: str = "") -> float:
    """The floor of a training stage: a process that imports torch, transformers and TRL's trainers, and exits
    (`first`: "import tasks; " to import them under the package's GC settings, as a stage does)."""
    start = time.time()
    subprocess.run([sys.executable, "-c", f"{first}import torch, transformers, trl; from trl import GRPOTrainer"],
                   env=env, check=True, capture_output=True)
    return round(time.time() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each stage (the median is reported)")
    parser.add_argument("--store-runs", type=int, default=200, help="finished runs in the MLflow store beforehand")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(root), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "OMP_NUM_THREADS": "1"}
    overrides = {**yaml.safe_load(SMOKE.read_text()), **OVERRIDES}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="r1-bench-startup-") as tmp:
        ws = make_workspace(Path(tmp) / "repo", overrides)
        seed_store(ws, env, args.store_runs)
        for name, module, stage_args in STAGES:
            runs = [run_stage(ws, env, module, stage_args) for _ in range(args.repeat)]
            results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            row = "  ".join(f"{k} {v:5.2f}" for k, v in results[name].items())
            print(f"{name:20s} {row}", flush=True)
    floor = statistics.median(imports_floor(env) for _ in range(args.repeat))
    tasks_floor = statistics.median(imports_floor(env, "import tasks; ") for _ in range(args.repeat))
    print(f"floor (python -c 'import torch, transformers, trl; from trl import GRPOTrainer'): {floor} s; "
          f"with tasks' GC settings: {tasks_floor} s")
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored["startup"] = {"measured": time.strftime("%Y-%m-%d"), "target_fixed_seconds": TARGET_SECONDS,
                         "repeat": args.repeat, "store_runs": args.store_runs,
                         "cpu_count": os.cpu_count(), "training_imports_floor_seconds": floor,
                         "training_imports_floor_seconds_tasks_gc": tasks_floor, "stages": results,
                         "over_target": [n for n, r in results.items() if r["fixed"] > TARGET_SECONDS]}
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
