"""`make seeds`: the headline deltas of the recipe under other seeds, written to metrics/seeds.json.

    python -m tasks.seeds            # every seed of seeds.seeds
    python -m tasks.seeds --seed 1   # one of them (its folder is kept, so a re-run resumes with the next stage)

A seed s sets both the toy world's seed (`toy_world.seed: s`) and the model seed (`seed: <params.yaml seed> + s`),
so seed 0 is the workspace's own run: its numbers are read from evals/ when `dvc status` says those evaluations are
up to date, and the other seeds run the stages the deltas need (the toy world, the base, cold-start SFT, reasoning
RL, R1-Zero, and the evaluations of `seeds.models` and `seeds.prompted`) with the same code and params, each seed in its
own folder (`seeds/seed-<s>/`, not a DVC workspace: DVC tracks the main run). A finished stage leaves a marker
`.done/<dvc.yaml stage>` with its key, as DVC decides staleness: the seed's values of the params it lists in dvc.yaml,
the sha256 of its code deps (tasks/), and the keys of the stages whose outs it depends on; a stage runs again when
its key differs, and so then do the stages downstream of it. The seeds are fixed in params.yaml before anyone looks
at their numbers; the point is the spread, not the best one.

metrics/seeds.json: {"seeds": [0, 1, 2], "deltas": {"reasoning_rl-cold_start_sft": [d0, d1, d2], ...},
"ci95": {...: [[lo, hi], ...]}, "mean": {...}, "sd": {...}}: deltas of pass@1, paired over the test problems, each
with its bootstrap interval (tasks/blocks/stats.py), as the ladder computes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import yaml

from tasks.blocks.data import sha256
from tasks.blocks.dvc_files import stale_stages
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


CHAIN = {"prepare_data": ["tasks.prepare_data"], "base_model": ["tasks.base_model"],
         "cold_start_sft": ["tasks.sft", "cold_start_sft"], "reasoning_rl": ["tasks.grpo", "reasoning_rl"],
         "r1_zero": ["tasks.grpo", "r1_zero"]}


def stage_commands(params: Params) -> dict[str, list[str]]:
    """{dvc.yaml stage: its `python -m` command} of the stages the deltas need, upstream first."""
    commands = {**CHAIN, **{f"evaluate@{m}": ["tasks.evaluate", m] for m in params.evaluate.models},
                **{f"evaluate_prompted@{m}": ["tasks.evaluate", m] for m in params.evaluate.prompted}}
    return {name: [sys.executable, "-m", *c] for name, c in commands.items()}


class StageSpec(NamedTuple):
    """What dvc.yaml says a stage reads and writes (resolved against the workspace's params.yaml)."""

    params: list[str]  # sections (`toy_world`) or dotted keys (`r1_zero.prompt_template`)
    code: list[str]  # its deps under tasks/
    deps: list[str]  # its other deps (data, models)
    outs: list[str]


def dvc_stages(names: list[str]) -> dict[str, StageSpec]:
    """{name: StageSpec} of these dvc.yaml stages, as DVC's own parser resolves them."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        found = {stage.addressing: stage for stage in repo.index.stages if stage.addressing in names}
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"dvc.yaml (under the workspace's params.yaml) has no stages {missing}")
    specs = {}
    for name in names:
        stage = found[name]
        files = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
        specs[name] = StageSpec(params=[k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params],
                                code=[f for f in files if f.startswith("tasks/")],
                                deps=[f for f in files if not f.startswith("tasks/")],
                                outs=[o.def_path for o in stage.outs])
    return specs


def param_value(raw: dict, key: str) -> object:
    """The value of a params section or dotted key (None when it is not there)."""
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def overlaps(dep: str, out: str) -> bool:
    """A dep reads an out when it is the out, inside it, or a folder holding it."""
    return dep == out or dep.startswith(f"{out}/") or out.startswith(f"{dep}/")


def stage_keys(params: Params, specs: dict[str, StageSpec]) -> dict[str, str]:
    """{stage: key} for `specs` in their order (upstream first): a sha256 of the params the stage lists, its code and
    the keys of the stages upstream of it, so a change to any of them changes the keys of every stage after it."""
    raw = params.model_dump(mode="json")
    keys: dict[str, str] = {}
    for name, spec in specs.items():
        upstream = [other for other in keys if any(overlaps(dep, out) for dep in spec.deps
                                                   for out in specs[other].outs)]
        key = {"params": {k: param_value(raw, k) for k in spec.params},
               "code": {f: sha256(ROOT / f) for f in spec.code},
               "upstream": {other: keys[other] for other in upstream}}
        keys[name] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return keys


def run_seed(params: Params, seed: int, folder: Path) -> Path:
    """Run the stages for `seed` in `folder` whose key changed since they last finished there (or that never did);
    returns its evals/ folder."""
    p = seed_params(params, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(dump_params(p))
    commands = stage_commands(p)
    keys = stage_keys(p, dvc_stages(list(commands)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MLFLOW_TRACKING_URI": os.environ.get("R1_SEEDS_TRACKING_URI", f"sqlite:///{folder.resolve()}/mlflow.db")}
    (folder / ".done").mkdir(exist_ok=True)
    for name, command in commands.items():
        marker = folder / ".done" / name
        if marker.exists() and marker.read_text().split()[:1] == [keys[name]]:
            continue  # finished in an earlier call with this key: its outputs are in the folder
        marker.unlink(missing_ok=True)  # its outputs are about to change: no marker until it finishes again
        start = time.monotonic()
        print(f"[seed {seed}] {name}", flush=True)
        subprocess.run(command, cwd=folder, env=env, check=True)
        marker.write_text(f"{keys[name]}\n{time.monotonic() - start:.1f} s\n")
    return folder / "evals"


def workspace_evals(params: Params) -> Path:
    """evals/ of the workspace's own run (seed 0), after checking DVC has those evaluations up to date."""
    stages = [f"evaluate@{m}" for m in params.seeds.models] + [f"evaluate_prompted@{m}" for m in params.seeds.prompted]
    try:
        stale = ", ".join(sorted(stale_stages(stages)))
    except RuntimeError as exc:  # DVC could not tell
        stale = str(exc)
    if stale:
        raise SystemExit(f"seed 0 is the workspace's run, and its evaluations are not up to date ({stale}): "
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
