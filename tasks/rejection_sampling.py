"""Stages `rejection_sampling` and `teacher_traces`: sample k answers per prompt from a model, keep the correct and
readable ones, blend them with non-reasoning data into an SFT set.

    python -m tasks.rejection_sampling rejection_sampling  # R1 stage 3: from the RL model; re-trains the base
    python -m tasks.rejection_sampling teacher_traces      # fresh traces of the final teacher, for distillation

Each writes data/<stage>/blend.jsonl and metrics/<stage>.json.

Samples are written in shards (data/<stage>/shards/, not a DVC out): a run killed during sampling
resumes without redoing finished shards. Filters, in order, each a named function whose drop count is reported:
correct (the RL stage's accuracy_reward), well formatted (format_reward), language-consistent, not truncated, not
too long, no long repeated n-grams; then de-duplication and at most m kept per prompt.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import mlflow

from tasks.blocks import models, rewards
from tasks.blocks.data import inputs_fingerprint, keep_if_same_inputs, mix_in, read_jsonl, write_json, write_jsonl
from tasks.blocks.generation import Generator, Sampling, require_vllm, with_system_prompt
from tasks.blocks.params import Params, RejectionSamplingParams
from tasks.blocks.stage import stage_main

STAGES = ("rejection_sampling", "teacher_traces")

Sample = dict  # {"prompt_id", "text", "num_tokens", "finished", "accuracy", "format", "language_consistency"}


def filter_correct(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s["accuracy"] == 1.0]


def filter_format(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s["format"] == 1.0]


def filter_language(samples: list[Sample], min_share: float) -> list[Sample]:
    return [s for s in samples if s["language_consistency"] >= min_share]


def filter_truncated(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s["finished"]]


def filter_too_long(samples: list[Sample], max_tokens: int) -> list[Sample]:
    return [s for s in samples if s["num_tokens"] <= max_tokens]


def max_ngram_repeats(text: str, n: int) -> int:
    """How often the most repeated run of n words occurs in `text`."""
    words = text.split()
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(counts.values(), default=0)


def filter_repetition(samples: list[Sample], n: int, max_repeats: int) -> list[Sample]:
    return [s for s in samples if max_ngram_repeats(s["text"], n) <= max_repeats]


def deduplicate(samples: list[Sample]) -> list[Sample]:
    """One copy of each (prompt, whitespace-normalised text)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for s in samples:
        key = (s["prompt_id"], " ".join(s["text"].split()))
        if key not in seen:
            seen.add(key)
            kept.append(s)
    return kept


def cap_per_prompt(samples: list[Sample], m: int) -> list[Sample]:
    taken: Counter[str] = Counter()
    kept = []
    for s in samples:
        if taken[s["prompt_id"]] < m:
            taken[s["prompt_id"]] += 1
            kept.append(s)
    return kept


def filters(p: RejectionSamplingParams) -> list[tuple[str, Callable[[list[Sample]], list[Sample]]]]:
    return [
        ("correct", filter_correct),
        ("format", filter_format),
        ("language", lambda s: filter_language(s, p.min_language_consistency)),
        ("truncated", filter_truncated),
        ("too_long", lambda s: filter_too_long(s, p.max_completion_tokens)),
        ("repetition", lambda s: filter_repetition(s, p.ngram_size, p.max_ngram_repeats)),
        ("duplicate", deduplicate),
        ("per_prompt_cap", lambda s: cap_per_prompt(s, p.keep_per_prompt)),
    ]


def apply_filters(samples: list[Sample], p: RejectionSamplingParams) -> tuple[list[Sample], dict[str, int]]:
    dropped = {}
    for name, keep in filters(p):
        kept = keep(samples)
        dropped[name] = len(samples) - len(kept)
        samples = kept
    return samples, dropped


def sample_shards(rows: list[dict], p: RejectionSamplingParams, params: Params, shards: Path) -> list[Sample]:
    """Generate and score k samples per prompt, one shard file at a time; finished shards are reused."""
    keep_if_same_inputs(shards, inputs_fingerprint(params, p.model, p.data))
    generator = None  # loaded on the first shard to generate: a fully resumed run loads no model
    samples: list[Sample] = []
    for start in range(0, len(rows), p.shard_size):
        path = shards / f"shard-{start:07d}.jsonl"
        if not path.exists():
            generator = generator or Generator(p.model, params.generation, params.runtime)
            chunk = rows[start:start + p.shard_size]
            prompts = [with_system_prompt(r["prompt"], params.prompt.system) for r in chunk]
            sampling = Sampling(n=p.samples_per_prompt, temperature=p.temperature, top_p=p.top_p,
                                max_new_tokens=p.max_new_tokens, seed=params.seed + start)
            shard = f"{start // p.shard_size + 1}/{math.ceil(len(rows) / p.shard_size)}"  # one bar per shard: k/n
            generated = generator(prompts, sampling, desc=f"sample shard {shard}")
            flat = [(row, s) for row, outs in zip(chunk, generated) for s in outs]
            scores = rewards.score_batch([s.text for _, s in flat], [row["answer"] for row, _ in flat],
                                         language=params.prompt.language)
            write_jsonl(path, ({"prompt_id": row["id"], "text": s.text, "num_tokens": s.num_tokens,
                                "finished": s.finished, **{name: scores[name][i] for name in scores}}
                               for i, (row, s) in enumerate(flat)))
        samples.extend(read_jsonl(path, required=("prompt_id", "text")))
    return samples


def pass_rate_histogram(samples: list[Sample], k: int) -> dict[str, int]:
    """How many prompts had 0, 1, ..., k correct samples out of k."""
    correct: Counter[str] = Counter()
    prompts = set()
    for s in samples:
        prompts.add(s["prompt_id"])
        correct[s["prompt_id"]] += s["accuracy"] == 1.0
    histogram = Counter(correct[pid] for pid in prompts)
    return {f"{c}/{k}": histogram.get(c, 0) for c in range(k + 1)}


def blend(reasoning: list[dict], general: list[dict], ratio: float, seed: int) -> tuple[list[dict], int]:
    """Reasoning rows plus non-reasoning rows making up `ratio` of the blend (R1: ~200k of ~800k), shuffled.

    When the non-reasoning pool is smaller than its share, its rows are repeated (upsampled) to reach it. With no
    reasoning rows at all (allowed by `min_kept_samples: 0`), the blend is the non-reasoning rows."""
    rng = random.Random(seed)
    chosen = mix_in(general, len(reasoning), ratio, rng) if reasoning else list(general)
    rows = reasoning + chosen
    rng.shuffle(rows)
    return rows, len(chosen)


def sft_row(sample: Sample, row: dict, index: int) -> dict:
    return {"id": f"rs-{index:06d}", "source": f"rejection_sampling:{row.get('source', 'unknown')}",
            "prompt": row["prompt"], "completion": [{"role": "assistant", "content": sample["text"]}],
            "answer": row["answer"]}


def general_row(row: dict) -> dict:
    return {"id": row["id"], "source": row["source"], "prompt": row["prompt"],
            "completion": [{"role": "assistant", "content": row["response"]}], "answer": row["answer"]}


def run(stage: str, p: RejectionSamplingParams, params: Params, out: Path) -> dict:
    models.require_model_dir(p.model)
    if params.generation.backend == "vllm":
        require_vllm()  # before reading any data; the Generator, built lazily at the first missing shard, checks too
    rows = read_jsonl(p.data, required=("id", "prompt", "answer"), limit=p.num_prompts)
    general = read_jsonl(p.non_reasoning_data, required=("id", "prompt", "answer", "response"))
    samples = sample_shards(rows, p, params, out / "shards")
    kept, dropped = apply_filters(samples, p)
    by_id = {row["id"]: row for row in rows}
    reasoning = [sft_row(s, by_id[s["prompt_id"]], i) for i, s in enumerate(kept)]
    if len(reasoning) < p.min_kept_samples:
        raise RuntimeError(f"rejection sampling kept {len(reasoning)} of {len(samples)} samples, fewer than "
                           f"min_kept_samples={p.min_kept_samples}; dropped per filter: {dropped}")
    blended, n_general = blend(reasoning, [general_row(g) for g in general], p.non_reasoning_ratio, params.seed)
    write_jsonl(out / "blend.jsonl", blended)
    report = {
        "prompts": len(rows), "samples": len(samples), "samples_per_prompt": p.samples_per_prompt,
        "pass_rate": sum(s["accuracy"] for s in samples) / len(samples),
        "pass_rate_histogram": pass_rate_histogram(samples, p.samples_per_prompt),
        "dropped_by_filter": dropped, "filter_order": list(dropped),  # the JSON file sorts dropped_by_filter's keys
        "kept_reasoning": len(reasoning), "non_reasoning": n_general,
        "final_size": len(blended), "non_reasoning_share": n_general / len(blended),
        "prompts_with_a_kept_sample": len({s["prompt_id"] for s in kept}),
    }
    if mlflow.active_run():
        mlflow.log_dict(report, f"{stage}_report.json")
    return report


def main() -> None:
    stage, report = stage_main(STAGES, run, __doc__.splitlines()[0], out="data/{stage}")
    write_json(Path("metrics") / f"{stage}.json", report)


if __name__ == "__main__":
    main()
