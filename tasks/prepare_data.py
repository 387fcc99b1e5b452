"""Stage `prepare_data`: write the toy world to data/toy/.

Outputs (JSON Lines, fields documented in data/README.md):
    data/toy/train.jsonl       reasoning prompts for RL (id, source, prompt, answer, solution, steps)
    data/toy/sampling_pool.jsonl  reasoning prompts for rejection sampling and teacher traces (same fields)
    data/toy/dev.jsonl         held-out problems for the dev curve logged during RL (same fields)
    data/toy/test.jsonl        held-out problems for evaluation (same fields)
    data/toy/cold_start.jsonl  prompt/completion pairs in the R1 output format for cold-start SFT
    data/toy/corpus.jsonl      plain-text pretraining documents for the toy base model (id, source, text)
The reasoning files come from disjoint sets of number tuples (tasks/blocks/toy_world.py generate_pools).
    data/toy/general_train.jsonl  non-reasoning tasks with reference responses, blended into re-SFT: general tasks,
                                  harmful requests with refusals (kind "harmful"), benign look-alikes
    data/toy/general_test.jsonl   held-out non-reasoning tasks for evaluation (id, source, kind, prompt, response,
                                  answer)
    data/toy/preferences_train.jsonl  preference pairs (prompt, chosen, rejected) for the reward model
    data/toy/preferences_test.jsonl   held-out pairs (on held-out prompts) for its pairwise accuracy

Rows accepted from the drop folder (data/extra/, see tasks/blocks/incoming.py) are appended to train.jsonl (prompts) and
preferences_train.jsonl (preference pairs).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from tasks.blocks import incoming, toy_world
from tasks.blocks.data import write_jsonl
from tasks.blocks.params import Params, ToyWorldParams
from tasks.blocks.stage import stage_main

OUT = Path("data/toy")


def run(stage: str, p: ToyWorldParams, params: Params, out: Path = OUT) -> dict:
    pools = toy_world.generate_pools(
        p.seed, {"test": p.test_size, "dev": p.dev_size, "cold_start": p.cold_start_size, "train": p.train_size,
                 "sampling_pool": p.sampling_pool_size, "corpus": p.corpus_size},
        p.max_operand, p.max_value, tuple(p.step_weights), p.phrasings_per_tuple)
    facts = toy_world.fact_table(p.seed, p.facts)
    general_train, general_test = toy_world.general_rows(p.seed, facts, p.general_test_size)
    safety_train, safety_test = toy_world.safety_rows(p.seed, p.harmful_requests, p.harmful_test_size,
                                                      p.lookalike_test_size)
    general_train, general_test = general_train + safety_train, general_test + safety_test

    def problems(pool: str) -> Iterator[dict]:
        return (toy_world.problem_row(x, pool, i) for i, x in enumerate(pools[pool]))

    counts = {
        "train": write_jsonl(out / "train.jsonl", chain(problems("train"), incoming.accepted_rows("prompts"))),
        "sampling_pool": write_jsonl(out / "sampling_pool.jsonl", problems("sampling_pool")),
        "dev": write_jsonl(out / "dev.jsonl", problems("dev")),
        "test": write_jsonl(out / "test.jsonl", problems("test")),
        "cold_start": write_jsonl(out / "cold_start.jsonl", toy_world.cold_start_rows(
            pools["cold_start"], p.cold_start_terse_fraction, p.seed, p.cold_start_french_fraction)),
        "corpus": write_jsonl(out / "corpus.jsonl", toy_world.corpus_rows(
            pools["corpus"], p.general_docs, p.french_fraction, p.seed, facts, p.r1_form_fraction,
            toy_world.arithmetic_docs(random.Random(p.seed + 7), p.arithmetic_docs, p.max_operand, p.max_value))),
        "general_train": write_jsonl(out / "general_train.jsonl", general_train),
        "general_test": write_jsonl(out / "general_test.jsonl", general_test),
        "preferences_train": write_jsonl(out / "preferences_train.jsonl",
                                         chain(toy_world.preference_rows(general_train, p.seed, "train"),
                                               incoming.accepted_rows("preferences"))),
        "preferences_test": write_jsonl(out / "preferences_test.jsonl",
                                        toy_world.preference_rows(general_test, p.seed, "test")),
    }
    return {f"rows_{name}": n for name, n in counts.items()}


def main() -> None:
    stage_main(("prepare_data",), run, __doc__.splitlines()[0], out=str(OUT), section="toy_world")


if __name__ == "__main__":
    main()
