"""Reasoning RL under other params, compared on held-out prompts (never the test split): the protocol RESULTS.md's
choices of reasoning RL's learning rate (2026-12-03) and step budget (2026-12-06) used.

    dvc repro cold_start_sft        # the cold start every arm starts from (models/cold_start_sft)
    python scripts/rl_held_out.py --arm default --arm steps160:reasoning_rl.max_steps=160,student_rl.max_steps=160

Each arm is `name[:key=value,...]` (dotted params keys over this checkout's params.yaml): `python -m tasks.grpo
reasoning_rl` runs in a scratch copy of the repository (tests/workspace.py) from this checkout's cold start and toy
data. The cold start and every arm's model are then sampled `--samples` times a prompt at the evaluation's settings
(temperature, top-p, new tokens of params.yaml's `evaluate`) on prompts held out from RL and disjoint from the test
split: the dev problems and the first `--pool` problems of the rejection-sampling pool. Judged by the rewards' own
judge; paired per-problem deltas against the cold start and between consecutive arms, each with ±2 SE and a
bootstrap 95% interval. Decide the comparison before running it, and do not run it again on another seed to get a
better-looking one. Results are printed and written to `--out`/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import scratch_flow  # noqa: E402  (after the repository root is on the path)
from tasks.blocks import rewards, stats  # noqa: E402
from tasks.blocks.data import read_jsonl  # noqa: E402
from tasks.blocks.params import Params, load_params  # noqa: E402


def parse_arm(text: str) -> tuple[str, dict]:
    """"name:key=value,key=value" -> (name, {dotted key: value}), the values read as `--set` reads them."""
    from flows.pipeline import parse_overrides
    from tasks.blocks.params import ParamsError

    name, _, sets = text.partition(":")
    try:
        return name, parse_overrides([item for item in sets.split(",") if item])
    except ParamsError as exc:
        raise SystemExit(f"error: --arm {text}: {exc}") from None


def train(name: str, overrides: dict, out: Path) -> Path:
    """reasoning_rl from this checkout's cold start under `overrides`, in out/name (reused when already trained)."""
    ws = out / name
    if (ws / "models" / "reasoning_rl" / "config.json").exists():
        return ws / "models" / "reasoning_rl"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    scratch_flow.rl_workspace(ws, overrides, ROOT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db"}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "tasks.grpo", "reasoning_rl"], cwd=ws, env=env, check=True)
    print(f"{name}: trained in {time.monotonic() - start:.0f} s", flush=True)
    return ws / "models" / "reasoning_rl"


def held_out_scores(model: Path, rows: list[dict], samples: int, seed: int, params: Params) -> list[float]:
    """Per problem, the share of `samples` completions judged correct."""
    from tasks.blocks.generation import Generator, Sampling

    e = params.evaluate
    out = Generator(model, params.generation, params.runtime)(
        [row["prompt"] for row in rows],
        Sampling(n=samples, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens, seed=seed))
    correct = rewards.score_batch([s.text for per_row in out for s in per_row],
                                  [row["answer"] for row in rows for _ in range(samples)],
                                  reward_names=("accuracy",))["accuracy"]
    return [statistics.mean(correct[i * samples:(i + 1) * samples]) for i in range(len(rows))]


def compare(a: list[float], b: list[float]) -> dict:
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    delta, ci = stats.paired_delta(a, b)
    return {"delta": delta, "two_se": 2 * statistics.stdev(diffs) / len(diffs) ** 0.5, "ci95": ci}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, help="name[:key=value,...] (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints" / "rl_held_out")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--pool", type=int, default=400, help="rejection-sampling pool problems added to dev")
    parser.add_argument("--seed", type=int, default=1, help="the sampling seed of the comparison")
    args = parser.parse_args()
    arms = dict(parse_arm(text) for text in args.arm)
    rows = (read_jsonl(ROOT / "data/toy/dev.jsonl", required=("id", "prompt", "answer"))
            + read_jsonl(ROOT / "data/toy/sampling_pool.jsonl", required=("id", "prompt", "answer"))[:args.pool])
    models = {"cold_start_sft": ROOT / "models" / "cold_start_sft",
              **{name: train(name, overrides, args.out) for name, overrides in arms.items()}}
    params = load_params(ROOT / "params.yaml")
    scores = {name: held_out_scores(path, rows, args.samples, args.seed, params) for name, path in models.items()}
    names = list(models)
    pairs = [(names[0], n) for n in names[1:]] + list(zip(names[1:], names[2:]))
    results = {"prompts": len(rows), "samples": args.samples, "arms": arms,
               "pass@1": {name: statistics.mean(s) for name, s in scores.items()},
               "deltas": {f"{b}-{a}": compare(scores[a], scores[b]) for a, b in pairs}}
    for name, value in results["pass@1"].items():
        print(f"{name}: pass@1 {value:.3f} ({len(rows)} held-out prompts x {args.samples})")
    for key, d in results["deltas"].items():
        print(f"{key}: {d['delta']:+.3f} +- {d['two_se']:.3f} (2 SE), 95% [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
