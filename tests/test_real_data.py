"""Real data: the loaders on hand-written rows (everywhere), and the reward contract on GSM8K and MATH-500 (where
../shared/data exists; R1_SHARED_DATA overrides its location)."""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from tasks import real_data
from tasks.blocks.data import DataError, read_jsonl
from tasks.blocks.params import Params, ParamsError, RealSource, load_params, validate
from tasks.blocks.rewards import has_format, is_correct, score_batch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("R1_SHARED_DATA") or ROOT.parent / "shared" / "data")
RECIPE = ROOT / "recipes" / "qwen2.5-math-1.5b.yaml"  # its sources carry the published SHA-256 of each file

GSM8K_ROW = {"question": "A farm has 1,200 hens. Each lays 2 eggs a day and half the eggs are sold. How many eggs "
                         "are sold each day?",
             "answer": "The hens lay 1,200 * 2 = <<1200*2=2400>>2,400 eggs a day.\n"
                       "Half are sold: 2,400 / 2 = <<2400/2=1200>>1,200 eggs.\n#### 1,200"}
MATH_ROW = {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?",
            "solution": "Adding, $\\frac{1}{4} + \\frac{1}{4} = \\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
            "answer": "\\frac{1}{2}"}


def write_source(path: Path, rows: list[dict]) -> RealSource:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    fmt = "gsm8k" if "question" in rows[0] else "math"
    return RealSource(path=str(path), format=fmt, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def test_gsm8k_gold_is_read_after_the_hashes_without_commas_and_calculator_notes_are_dropped():
    [row] = real_data.problem_rows([GSM8K_ROW], "gsm8k", "gsm8k_train")
    assert row == {"id": "gsm8k_train-00000", "source": "gsm8k_train",
                   "prompt": [{"role": "user", "content": GSM8K_ROW["question"]}], "answer": "1200",
                   "solution": "The hens lay 1,200 * 2 = 2,400 eggs a day.\nHalf are sold: 2,400 / 2 = 1,200 eggs."}
    assert real_data.gsm8k_solution("She is 3 - 10 = <<3-10=-7>>-7 short.\n#### -7") == ("She is 3 - 10 = -7 short.",
                                                                                         "-7")
    with pytest.raises(DataError, match=re.escape("gsm8k_train: row 2: no `#### N` final answer")):
        real_data.problem_rows([GSM8K_ROW, {"question": "q", "answer": "It is 5."}], "gsm8k", "gsm8k_train")


def test_math_gold_is_the_answer_field_else_the_solutions_last_boxed_answer():
    [row] = real_data.problem_rows([MATH_ROW], "math", "math500")
    assert row["answer"] == "\\frac{1}{2}" and row["solution"] == MATH_ROW["solution"]
    assert row["prompt"] == [{"role": "user", "content": MATH_ROW["problem"]}]
    without_answer = {"problem": "p", "solution": "First \\boxed{3}, no: \\boxed{\\{1, 2\\}}."}  # MATH train rows
    assert real_data.problem_rows([without_answer], "math", "math")[0]["answer"] == "\\{1, 2\\}"
    with pytest.raises(DataError, match="math: row 1: no `answer` field and no"):
        real_data.problem_rows([{"problem": "p", "solution": "It is 3."}], "math", "math")


def test_cold_start_rows_are_worked_solutions_in_the_r1_format():
    problems = real_data.problem_rows([GSM8K_ROW], "gsm8k", "gsm8k_train")
    [row] = real_data.cold_start_rows(problems)
    [message] = row["completion"]
    assert message["role"] == "assistant"
    assert message["content"] == f"<think>\n{problems[0]['solution']}\n</think>\nThe answer is \\boxed{{1200}}."
    assert has_format(message["content"]) and is_correct(message["content"], row["answer"])
    assert row["prompt"] == problems[0]["prompt"] and row["id"] == "gsm8k_train-00000-cold"


def test_the_stage_checks_the_sha256_and_writes_the_data_contract(tmp_path):
    source = write_source(tmp_path / "train.jsonl", [GSM8K_ROW, GSM8K_ROW])
    out = tmp_path / "real" / "gsm8k_train"
    assert real_data.run("gsm8k_train", source, Params(), out) == {"rows_problems": 2, "rows_cold_start": 2}
    problems = read_jsonl(out / "problems.jsonl", required=("id", "source", "prompt", "answer", "solution"))
    assert [r["id"] for r in problems] == ["gsm8k_train-00000", "gsm8k_train-00001"]
    assert all(isinstance(r["answer"], str) and r["prompt"][0]["role"] == "user" for r in problems)
    read_jsonl(out / "cold_start.jsonl", required=("id", "source", "prompt", "completion", "answer"))
    assert json.loads((out / "source.json").read_text()) == {"path": source.path, "sha256": source.sha256,
                                                             "format": "gsm8k", "rows": 2}

    with pytest.raises(DataError, match=re.escape(f"SHA-256 is {source.sha256}, expected {'0' * 63}1")):
        real_data.run("gsm8k_train", source.model_copy(update={"sha256": "0" * 63 + "1"}), Params(),
                      tmp_path / "real" / "gsm8k_train")
    with pytest.raises(DataError, match="missing.jsonl: source file not found"):
        real_data.check_source(tmp_path / "missing.jsonl", source.sha256)


def test_real_data_params_need_identifier_names_and_a_sha256():
    assert load_params(ROOT / "params.yaml").real_data.sources == {}  # the toy world: no real_data stage at all
    entry = {"path": "x.jsonl", "format": "gsm8k", "sha256": "a" * 64}
    with pytest.raises(ParamsError, match="real_data.sources: .*must be identifiers"):
        validate({"real_data": {"sources": {"gsm8k-train": entry}}})
    with pytest.raises(ParamsError, match=r"real_data.sources.gsm8k.sha256: String should match pattern"):
        validate({"real_data": {"sources": {"gsm8k": {**entry, "sha256": "abc"}}}})


def test_a_recipes_system_prompt_reaches_the_sft_rows_and_the_completion_is_unchanged(tmp_path):
    from tasks.sft import load_sft_dataset

    source = write_source(tmp_path / "train.jsonl", [GSM8K_ROW])
    real_data.run("gsm8k_train", source, Params(), tmp_path / "real" / "gsm8k_train")
    system = load_params(RECIPE).prompt.system
    [row] = load_sft_dataset(str(tmp_path / "real" / "gsm8k_train" / "cold_start.jsonl"), system)
    assert row["prompt"][0] == {"role": "system", "content": system}
    assert row["completion"][0]["content"].startswith("<think>\n")


# ----------------------------------------------------------------------------- the reward contract on real data

def shared_rows(name: str) -> list[dict]:
    """The rows of a ../shared/data file named by the recipe, checked against the recipe's SHA-256: a file that
    exists but differs fails the test (DataError), only a missing data directory skips it."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the real data sets live there (set R1_SHARED_DATA to another copy)")
    source = load_params(RECIPE).real_data.sources[name]
    path = SHARED / Path(source.path).relative_to("../shared/data")
    return real_data.load_source(source.model_copy(update={"path": str(path)}), name)


def test_math500_reference_solutions_score_their_own_answer_and_not_another_problems():
    rows = shared_rows("math500")
    assert len(rows) == 500
    completions = [f"<think>\n{row['solution']}\n</think>\n{row['solution']}" for row in rows]
    others = [rows[(i + 1) % len(rows)]["answer"] for i in range(len(rows))]  # the next problem's answer
    scores = score_batch(completions * 2, [row["answer"] for row in rows] + others, ("accuracy",))["accuracy"]
    own, other = scores[:len(rows)], scores[len(rows):]
    misses = [(row["id"], row["answer"]) for row, score in zip(rows, own) if score < 1]
    assert sum(own) / len(rows) >= 0.98, f"{len(misses)} reference solutions judged wrong: {misses[:20]}"
    matches = [(row["answer"], gold) for row, gold, score in zip(rows, others, other) if score > 0]
    assert sum(other) / len(rows) <= 0.02, f"{len(matches)} answers judged equal to another problem's: {matches}"


GSM8K_WRITINGS = {  # how a model may write the gold N
    "1,000": lambda n: f"{int(n):,}",
    "\\$18": lambda n: f"\\${n}",
    "$18": lambda n: f"${n}",
    "18.00": lambda n: f"{n}.00",
}


def test_gsm8k_test_golds_written_with_commas_dollars_or_decimals_score_one():
    rows = shared_rows("gsm8k_test")
    assert len(rows) == 1319
    completions, golds, labels = [], [], []
    for label, write in GSM8K_WRITINGS.items():
        for row in rows:
            boxed = f"\\boxed{{{write(row['answer'])}}}"
            completions.append(f"<think>\n{row['solution']}\n</think>\nThe answer is {boxed}.")
            golds.append(row["answer"])
            labels.append((label, row["id"], row["answer"]))
    scores = score_batch(completions, golds, ("accuracy",))["accuracy"]
    misses = [label for label, score in zip(labels, scores) if score < 1]
    assert not misses, f"{len(misses)} written golds judged wrong: {misses[:20]}"
