"""`make bench-load`: the load targets of issue 8, measured on this machine (never in the test suite).

1. rejection sampling, then evaluation, on a 20,000-prompt pool with a tiny model, each as its stage command:
   wall time, peak RSS of the stage's process tree (target: <= 3 GB), and that a progress bar was shown;
2. the reward batch path (tasks/rewards.score_batch) on 100,000 completions, 10 calls of 10,000: the RSS of the
   scoring process and its judge processes after each call (target: flat, no leak);
3. 10,000 completions of 100 kB each (1 GB of text) streamed through score_batch: peak RSS (target: bounded).

    OMP_NUM_THREADS=1 python -m benchmarks.load              # the sizes above
    OMP_NUM_THREADS=1 python -m benchmarks.load --scale 0.05 # a first try: every size times 0.05

Results are printed and stored under "load" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results.json")
POOL, REWARD_COMPLETIONS, REWARD_CALLS, LONG_COMPLETIONS, LONG_BYTES = 20_000, 100_000, 10, 10_000, 100_000


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (judge processes included), in bytes."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRSS:
    """Samples a process tree's RSS every 0.2 s in a thread; `.peak` is the highest sum seen."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, tree_rss(self.process))
            except psutil.NoSuchProcess:
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def gb(n: int) -> float:
    return round(n / 2**30, 3)


def run_stage(cmd: list[str], ws: Path, env: dict) -> dict:
    """Run a stage command in `ws`, sampling its peak RSS; check its stderr showed a progress bar."""
    log = ws / f"{cmd[2].split('.')[-1]}.log"
    start = time.monotonic()
    with log.open("w") as err:
        process = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=err)
        with PeakRSS(process.pid) as rss:
            code = process.wait()
    if code:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    return {"seconds": round(time.monotonic() - start, 1), "peak_rss_gb": gb(rss.peak),
            "progress_bar": "seq/s]" in text or "it/s]" in text}


def problem(i: int, rng: random.Random) -> dict:
    a, b = rng.randint(1, 12), rng.randint(1, 8)
    return {"id": f"load-{i}", "source": "load", "answer": str(a + b),
            "prompt": [{"role": "user", "content": f"Ana has {a} apples. She buys {b} more. How many apples does "
                                                   "Ana have now?"}]}


def bench_stages(pool: int, env: dict) -> dict:
    from tasks.blocks.data import write_jsonl
    from tasks.blocks.params import apply_overrides, read_yaml
    from tests.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="r1-load-") as tmp:
        ws = Path(tmp)
        build_tiny_model(ws / "models" / "tiny")
        rng = random.Random(0)
        write_jsonl(ws / "pool.jsonl", (problem(i, rng) for i in range(pool)))
        write_jsonl(ws / "general.jsonl", [{"id": f"g{i}", "source": "load", "prompt": [
            {"role": "user", "content": f"Say {i}."}], "answer": str(i), "response": str(i)} for i in range(50)])
        sampling = {"model": "models/tiny", "data": "pool.jsonl", "num_prompts": None, "samples_per_prompt": 2,
                    "max_new_tokens": 32, "min_kept_samples": 0, "non_reasoning_data": "general.jsonl",
                    "shard_size": 1024}
        overrides = {f"rejection_sampling.{k}": v for k, v in sampling.items()} | {
            "runtime.device": "cpu", "generation.batch_size": 256, "evaluate.models": ["tiny"],
            "evaluate.data": "pool.jsonl", "evaluate.general_data": None, "evaluate.num_samples": 2,
            "evaluate.max_new_tokens": 32}
        (ws / "params.yaml").write_text(yaml.safe_dump(apply_overrides(read_yaml(ROOT / "params.yaml"), overrides)))
        results = {"prompts": pool, "samples_per_prompt": 2, "max_new_tokens": 32}
        for name, cmd in [("rejection_sampling", ["-m", "tasks.rejection_sampling", "rejection_sampling"]),
                          ("evaluation", ["-m", "tasks.evaluate", "tiny"])]:
            print(f"  {name} on {pool} prompts ...", flush=True)
            results[name] = run_stage([sys.executable, *cmd], ws, env)
            print(f"  {name}: {results[name]}", flush=True)
    return results


def reward_stream(total: int, calls: int) -> dict:
    """score_batch over `total` short completions in `calls` calls; peak RSS of this process and its judge
    processes during each call, and this process's RSS after it."""
    from tasks.blocks.rewards import score_batch

    me, per_call, peaks, after, start = psutil.Process(), total // calls, [], [], time.monotonic()
    for call in range(calls):
        rng = random.Random(call)
        golds = [str(rng.randint(1, 40)) for _ in range(per_call)]
        texts = (f"<think>{int(g) - 1} + 1 = {g}. So the total is {g}.</think> The answer is \\boxed{{{g}}}."
                 for g in golds)
        with PeakRSS(me.pid) as rss:
            scores = score_batch(texts, golds)
        assert sum(scores["accuracy"]) == per_call, "every completion here is correct"
        peaks.append(round(rss.peak / 2**20, 1))
        after.append(round(me.memory_info().rss / 2**20, 1))
    return {"completions": total, "calls": calls, "seconds": round(time.monotonic() - start, 1),
            "peak_tree_rss_mb_per_call": peaks, "rss_mb_after_each_call": after,
            "growth_mb_first_to_last_call": round(after[-1] - after[0], 1)}


def long_stream(count: int, size: int) -> dict:
    """score_batch over `count` completions of `size` bytes each, generated lazily: peak RSS of the tree."""
    from tasks.blocks.rewards import score_batch

    words = "so we add the apples and then count them again to be sure ".split()

    def completion(i: int) -> str:
        rng = random.Random(i)
        filler = " ".join(rng.choice(words) for _ in range(size // 5))[:size - 64]
        return f"<think>{filler}</think> The answer is \\boxed{{{i % 40}}}."

    start = time.monotonic()
    with PeakRSS(os.getpid()) as rss:
        scores = score_batch((completion(i) for i in range(count)), (str(i % 40) for i in range(count)))
    assert len(scores["accuracy"]) == count
    return {"completions": count, "bytes_each": size, "seconds": round(time.monotonic() - start, 1),
            "peak_rss_gb": gb(rss.peak), "accuracy_mean": round(sum(scores["accuracy"]) / count, 3)}


def in_subprocess(call: str, env: dict) -> dict:
    """Run `benchmarks.load.<call>` in a fresh interpreter, so its RSS is its own."""
    code = f"import json; from benchmarks.load import *; print(json.dumps({call}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this (a first try: 0.05)")
    args = parser.parse_args()
    n = lambda size: max(1, round(size * args.scale))  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="r1-load-mlflow-") as store:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        results = {"scale": args.scale, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                   "cpu_count": os.cpu_count()}
        print("stages on a large prompt pool:", flush=True)
        results["stages"] = bench_stages(n(POOL), env)
        print("reward batch path:", flush=True)
        results["reward_stream"] = in_subprocess(f"reward_stream({n(REWARD_COMPLETIONS)}, {REWARD_CALLS})", env)
        print(f"  {results['reward_stream']}", flush=True)
        results["long_completions"] = in_subprocess(f"long_stream({n(LONG_COMPLETIONS)}, {LONG_BYTES})", env)
        print(f"  {results['long_completions']}", flush=True)
    results["measured"] = time.strftime("%Y-%m-%d")
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(stored | {"load": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
