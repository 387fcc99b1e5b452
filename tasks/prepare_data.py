"""Stage `prepare_data`: write the toy world to data/toy/.

Outputs (JSON Lines, fields documented in data/README.md):
    data/toy/train.jsonl       reasoning prompts for RL (id, source, prompt, answer, solution, steps)
    data/toy/test.jsonl        held-out problems for evaluation (same fields; disjoint by text and number tuple)
    data/toy/cold_start.jsonl  prompt/completion pairs in the R1 output format for cold-start SFT
    data/toy/corpus.jsonl      plain-text pretraining documents for the toy base model (id, source, text)
    data/toy/general_train.jsonl  non-reasoning tasks with reference responses, blended into re-SFT: general tasks,
                                  harmful requests with refusals (kind "harmful"), benign look-alikes
    data/toy/general_test.jsonl   held-out non-reasoning tasks for evaluation (id, source, kind, prompt, response,
                                  answer)
    data/toy/preferences_train.jsonl  preference pairs (prompt, chosen, rejected) for the reward model
    data/toy/preferences_test.jsonl   held-out pairs (on held-out prompts) for its pairwise accuracy

Rows accepted from the drop folder (data/extra/, see tasks/incoming.py) are appended to train.jsonl (prompts) and
preferences_train.jsonl (preference pairs).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import mlflow

from tasks import incoming, toy_world
from tasks.data import write_jsonl
from tasks.params import ToyWorldParams, load_params
from tasks.tracking import stage_run

OUT = Path("data/toy")


def run(p: ToyWorldParams, out: Path = OUT) -> dict:
    train, test = toy_world.generate_problems(p.seed, p.train_size, p.test_size, p.max_operand, p.max_steps,
                                               p.max_value)
    facts = toy_world.fact_table(p.seed, p.facts)
    general_train, general_test = toy_world.general_rows(p.seed, facts, p.general_test_size)
    safety_train, safety_test = toy_world.safety_rows(p.seed, p.harmful_requests, p.harmful_test_size)
    general_train, general_test = general_train + safety_train, general_test + safety_test
    counts = {
        "train": write_jsonl(out / "train.jsonl", chain(
            (toy_world.problem_row(x, "train", i) for i, x in enumerate(train)), incoming.accepted_rows("prompts"))),
        "test": write_jsonl(out / "test.jsonl", (toy_world.problem_row(x, "test", i) for i, x in enumerate(test))),
        # The cold-start set is the head of the train split: R1 uses a few thousand curated examples.
        "cold_start": write_jsonl(out / "cold_start.jsonl", toy_world.cold_start_rows(
            train[:p.cold_start_size], p.cold_start_terse_fraction, p.seed)),
        "corpus": write_jsonl(out / "corpus.jsonl",
                              toy_world.corpus_rows(train, p.general_docs, p.french_fraction, p.seed, facts)),
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
    params = load_params()
    with stage_run("prepare_data", params.toy_world, params.tracking.experiment):
        mlflow.log_metrics(run(params.toy_world))


if __name__ == "__main__":
    main()
