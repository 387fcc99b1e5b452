"""`make seeds`: the headline deltas of the recipe under other seeds, written to metrics/seeds.json.

    python -m tasks.seeds            # every seed of seeds.seeds
    python -m tasks.seeds --seed 1   # one of them (its folder is kept, so a re-run resumes with the next stage)

A seed s sets both the toy world's seed (`toy_world.seed: s`) and the model seed (`seed: <params.yaml seed> + s`),
so seed 0 is the workspace's own run: its numbers are read from evals/ when `dvc status` says those evaluations are
up to date, and the other seeds run the stages the deltas need (`seeds.stages`: the toy world, the base, cold-start
SFT, reasoning RL, R1-Zero, and the evaluations of `seeds.models`) with the same code and params, each seed in its
own folder (`seeds/seed-<s>/`, not a DVC workspace: DVC tracks the main run). The seeds are fixed in params.yaml
before anyone looks at their numbers; the point is the spread, not the best one.

metrics/seeds.json: {"seeds": [0, 1, 2], "deltas": {"reasoning_rl-cold_start_sft": [d0, d1, d2], ...},
"ci95": {...: [[lo, hi], ...]}, "mean": {...}, "sd": {...}}: deltas of pass@1, paired over the test problems, each
with its bootstrap interval (tasks/blocks/stats.py), as the ladder computes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tasks.blocks.params import Params, apply_overrides, dump_params, load_params, validate
from tasks.evaluate import ladder_deltas

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("metrics/seeds.json")
METRIC = "pass@1"


def seed_params(params: Params, seed: int) -> Params:
    """The workspace's params with seed `seed`: the toy world's and the model's, and only the evaluations needed."""
    raw = apply_overrides(params.model_dump(mode="json"), {
        "toy_world.seed": seed, "seed": params.seed + seed,
        "evaluate.models": params.seeds.models, "evaluate.general_data": None, "evaluate.reward_model": "",
        "evaluate.prompted": {k: v for k, v in params.model_dump(mode="json")["evaluate"]["prompted"].items()
                              if k in params.seeds.prompted},
    })
    return validate(raw, source=f"seed {seed}")


def stage_commands(params: Params) -> list[list[str]]:
    """The stage modules the deltas need, in order, as `python -m` commands."""
    commands = [["tasks.prepare_data"], ["tasks.base_model"], ["tasks.sft", "cold_start_sft"],
                ["tasks.grpo", "reasoning_rl"], ["tasks.grpo", "r1_zero"]]
    commands += [["tasks.evaluate", name] for name in params.evaluate.names]
    return [[sys.executable, "-m", *c] for c in commands]


def done_marker(folder: Path, command: list[str]) -> Path:
    return folder / ".done" / "_".join(command[2:])


def run_seed(params: Params, seed: int, folder: Path) -> Path:
    """Run the stages for `seed` in `folder` (resuming after the last one finished with the same params); returns its
    evals/ folder."""
    p = seed_params(params, seed)
    folder.mkdir(parents=True, exist_ok=True)
    text = dump_params(p)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (folder / "params.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MLFLOW_TRACKING_URI": os.environ.get("R1_SEEDS_TRACKING_URI", f"sqlite:///{folder.resolve()}/mlflow.db")}
    for command in stage_commands(p):
        marker = done_marker(folder, command)
        if marker.exists():
            if marker.read_text().split()[:1] == [digest]:
                continue  # finished in an earlier call with these params: its outputs are in the folder
            shutil.rmtree(marker.parent)  # finished under other params: it and every stage after it run again
        start = time.monotonic()
        print(f"[seed {seed}] {' '.join(command[2:])}", flush=True)
        subprocess.run(command, cwd=folder, env=env, check=True)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(f"{digest}\n{time.monotonic() - start:.1f} s\n")
    return folder / "evals"


def workspace_evals(params: Params) -> Path:
    """evals/ of the workspace's own run (seed 0), after checking DVC has those evaluations up to date."""
    stages = [f"evaluate@{m}" for m in params.seeds.models] + [f"evaluate_prompted@{m}" for m in params.seeds.prompted]
    status = subprocess.run(["dvc", "status", "--json", *stages], capture_output=True, text=True)
    stale = json.loads(status.stdout or "{}") if status.returncode == 0 else None
    if stale is None or stale:
        detail = status.stderr.strip() if stale is None else ", ".join(sorted(stale))
        raise SystemExit(f"seed 0 is the workspace's run, and its evaluations are not up to date ({detail}): "
                         "run `make run` (or `dvc repro`) first")
    return Path("evals")


def collect(params: Params, evals: dict[int, Path]) -> dict:
    """metrics/seeds.json's content from each seed's evals/ folder."""
    deltas: dict[str, list[float]] = {}
    intervals: dict[str, list[list[float]]] = {}
    for seed in sorted(evals):
        for d in ladder_deltas(seed_params(params, seed), evals[seed]):
            if d["metric"] == METRIC:
                key = f"{d['to']}-{d['from']}"
                deltas.setdefault(key, []).append(d["delta"])
                intervals.setdefault(key, []).append(d["ci95"])
    return {"seeds": sorted(evals), "metric": METRIC, "deltas": deltas, "ci95": intervals,
            "mean": {k: statistics.mean(v) for k, v in deltas.items()},
            "sd": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in deltas.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="run only this seed (repeatable)")
    args = parser.parse_args()
    params = load_params()
    missing = [m for m in params.seeds.models if m not in params.evaluate.models]
    missing += [m for m in params.seeds.prompted if m not in params.evaluate.prompted]
    if missing:
        parser.error(f"seeds.models / seeds.prompted name {missing}, which are not in evaluate.models / "
                     "evaluate.prompted: seed 0 is the workspace's run and needs those evaluations")
    chosen = args.seed or params.seeds.seeds
    unknown = sorted(set(chosen) - set(params.seeds.seeds))
    if unknown:
        parser.error(f"seeds {unknown} are not in seeds.seeds {params.seeds.seeds}")
    evals = {seed: workspace_evals(params) if seed == 0 else run_seed(params, seed, Path(params.seeds.dir) /
                                                                         f"seed-{seed}")
             for seed in chosen}
    if args.seed:
        return
    result = collect(params, evals)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(yaml.safe_dump({k: result[k] for k in ("seeds", "deltas", "mean", "sd")}, sort_keys=False))


if __name__ == "__main__":
    main()
