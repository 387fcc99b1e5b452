import hashlib
import re
from collections import Counter

import pytest

from tasks import prepare_data
from tasks.blocks import toy_world
from tasks.blocks.data import read_jsonl
from tasks.blocks.params import Params, ToyWorldParams

SMALL = ToyWorldParams(train_size=300, test_size=100, dev_size=40, cold_start_size=200, sampling_pool_size=200,
                       corpus_size=400, arithmetic_docs=4, general_docs=20)
REASONING_FILES = ("train", "sampling_pool", "dev", "test", "cold_start")


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path / "a")
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_other_seed_gives_other_problems(tmp_path):
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path / "a")
    prepare_data.run("prepare_data", SMALL.model_copy(update={"seed": 1}), Params(), tmp_path / "b")
    assert digest(tmp_path / "a")["train.jsonl"] != digest(tmp_path / "b")["train.jsonl"]


PHRASES = {re.escape(text.split(" {n}")[0]): op for op, forms in toy_world.OPERATIONS.items() for text, _ in forms}


def number_tuple(problem_text: str) -> tuple:
    """The arithmetic of a problem read back from its words alone: the start, then (operator, operand) per step."""
    start = int(re.search(r" has (\d+) ", problem_text).group(1))
    steps = re.findall(r"(?:She|He|Then she|Then he) (" + "|".join(PHRASES) + r") (\d+)", problem_text)
    return (start, *((PHRASES[re.escape(phrase)], int(n)) for phrase, n in steps))


def test_written_pools_are_disjoint_by_number_tuple(tmp_path):
    # Read from the files a stage reads: no tuple of the RL prompts, the sampling pool, dev or test is in the
    # pretraining corpus or the cold-start set, and no two pools share one.
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path)
    tuples = {name: [number_tuple(r["prompt"][-1]["content"]) for r in read_jsonl(tmp_path / f"{name}.jsonl")]
              for name in REASONING_FILES}
    corpus = [r["text"] for r in read_jsonl(tmp_path / "corpus.jsonl")
              if r["source"] in ("toy_arith", "toy_arith_fr", "toy_arith_r1")]  # worked problems, not drills
    tuples["corpus"] = [number_tuple(re.search(r"Problem: (.*)", text).group(1)) for text in corpus]
    assert len(tuples["corpus"]) == SMALL.corpus_size
    names = list(tuples)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(tuples[a]) & set(tuples[b]), (a, b)
    # Held-out pools: one phrasing per tuple, so each row is an independent item; training pools at most 4.
    assert len(set(tuples["test"])) == SMALL.test_size and len(set(tuples["dev"])) == SMALL.dev_size
    for name in ("train", "cold_start", "corpus"):
        assert max(Counter(tuples[name]).values()) <= SMALL.phrasings_per_tuple


def test_every_pool_has_the_same_step_mix():
    pools = toy_world.generate_pools(0, {"test": 1000, "train": 2000, "corpus": 4000})
    for name, problems in pools.items():
        if not problems:
            continue
        steps = Counter(len(p.ops) for p in problems)
        assert [steps[k] / len(problems) for k in (1, 2, 3)] == pytest.approx([0.05, 0.45, 0.5], abs=0.002), name
    # Tuples are drawn uniformly within a step count: no tuple dominates the test split.
    assert max(Counter(p.numbers for p in pools["test"]).values()) == 1


def test_problems_have_consistent_gold_reasoning():
    problems = toy_world.generate_pools(3, {"train": 500})["train"]
    assert {len(p.ops) for p in problems} == {1, 2, 3}
    for problem in problems:
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", problem.reasoning())
        assert len(steps) == len(problem.ops)
        for a, op, b, c in steps:
            assert toy_world.apply(int(a), op, int(b)) == int(c)
        assert int(steps[-1][3]) == problem.answer > 0
        assert all(1 <= v <= 20 for v in problem.values())
        assert number_tuple(problem.text()) == problem.numbers


def test_impossible_sizes_fail_clearly():
    with pytest.raises(ValueError, match="cannot make a test pool of 100000 problems.*1-step"):
        toy_world.generate_pools(0, {"test": 100_000})
    with pytest.raises(ValueError, match="unknown pools"):
        toy_world.generate_pools(0, {"validation": 10})


def test_cold_start_rows_are_in_the_r1_format(tmp_path):
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path)
    rows = read_jsonl(tmp_path / "cold_start.jsonl", required=("prompt", "completion", "answer"))
    assert len(rows) == SMALL.cold_start_size
    pattern = re.compile(r"^<think>\n(.+)\n</think>\nThe answer is \\boxed\{(\d+)\}\.$", re.S)
    for row in rows:
        match = pattern.match(row["completion"][0]["content"])
        assert match and match.group(2) == row["answer"]
        assert row["prompt"][0]["role"] == "user"
        terse = row["source"] == "toy_arith_terse"
        assert ("\n" not in match.group(1)) == terse
        assert ("commence avec" in match.group(1)) == (row["source"] == "toy_arith_french")
        if terse:  # the one line is the whole chain, nested from the left, equal to the answer
            expression, result = match.group(1).rstrip(".").split(" = ")
            first, *rest = re.findall(r"\d+|[-+*]", expression.replace("(", "").replace(")", ""))
            value = int(first)
            for op, n in zip(rest[::2], rest[1::2]):
                value = toy_world.apply(value, op, int(n))
            assert result == row["answer"] and value == int(result)
    shares = Counter(r["source"] for r in rows)
    assert 0.2 < shares["toy_arith_terse"] / len(rows) < 0.4
    assert 0.12 < shares["toy_arith_french"] / len(rows) < 0.28


def test_corpus_is_plain_text_with_french_and_r1_form_reasoning(tmp_path):
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path)
    rows = read_jsonl(tmp_path / "corpus.jsonl", required=("id", "text", "source"))
    assert not any("<|im_start|>" in r["text"] for r in rows)
    french = [r for r in rows if r["source"] == "toy_arith_fr"]
    assert 0.15 * SMALL.corpus_size < len(french) < 0.45 * SMALL.corpus_size
    assert all("commence avec" in r["text"] for r in french)
    # The tags occur only in R1-form documents, each behind the header that asks for them (R1-Zero's prompt asks
    # the same): a base model emits them when asked, and only then.
    r1_form = [r for r in rows if "<think>" in r["text"]]
    assert {r["source"] for r in r1_form} == {"toy_arith_r1"}
    assert 0.04 * SMALL.corpus_size < len(r1_form) < 0.16 * SMALL.corpus_size
    assert all(r["text"].startswith(toy_world.R1_FORM_HEADER + "\nProblem: ") for r in r1_form)
    assert all(re.search(r"Solution: <think>\n.+\n</think>\nThe answer is \\boxed\{\d+\}\.$", r["text"], re.S)
               for r in r1_form)
    # R1-Zero's default prompt is the head of such a document, word for word: the tiny base reads the request for the
    # tags in words it was trained on (under the paper's own wording its format rate and accuracy collapse).
    prompt = Params().r1_zero.prompt_template.replace(
        "{prompt}", r1_form[0]["text"].split("\nProblem: ")[1].split("\n")[0])
    assert r1_form[0]["text"].startswith(prompt + " <think>\n")
    assert sum(r["source"] == "toy_general" for r in rows) == SMALL.general_docs
    drills = [r["text"] for r in rows if r["source"] == "toy_arithmetic"]
    assert len(drills) == SMALL.arithmetic_docs
    for line in "\n".join(drills).splitlines():  # every drilled step is right, and in the world's ranges
        a, op, b, c = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)\.", line).groups()
        assert toy_world.apply(int(a), op, int(b)) == int(c) and 1 <= int(c) <= SMALL.max_value


def test_safety_rows_split_harmful_requests_and_benign_lookalikes():
    from tasks.evaluate import is_refusal

    train, test = toy_world.safety_rows(0, 100, 30)
    prompts = lambda rows: {r["prompt"][-1]["content"] for r in rows}  # noqa: E731
    assert not prompts(train) & prompts(test)
    harmful_test = [r for r in test if r["kind"] == "harmful"]
    assert len(harmful_test) == 30 and sum(r["kind"] == "harmful" for r in train) == 70
    assert {r["kind"] for r in test} == {"harmful", "general"}  # benign look-alikes are held out too
    for row in train + test:
        if row["kind"] == "harmful":
            assert is_refusal(row["response"]) and not is_refusal(row["compliance"]) and row["answer"] is None
        else:
            assert not is_refusal(row["response"]) and row["answer"] in row["response"]
    # Every category of the closed list is held out, so the refusal rate covers all of them.
    assert {r["source"] for r in harmful_test} == {f"toy_harmful_{c[0]}" for c in toy_world.SAFETY_CATEGORIES}


def test_preference_pairs_cover_helpfulness_and_harmlessness():
    facts = toy_world.fact_table(0, 20)
    general, _ = toy_world.general_rows(0, facts, 8)
    safety, _ = toy_world.safety_rows(0, 40, 10)
    pairs = toy_world.preference_rows(general + safety, 0, "train")
    assert len({p["id"] for p in pairs}) == len(pairs)
    flaws = {(p["kind"], p["flaw"]) for p in pairs}
    assert flaws == {("helpfulness", "wrong"), ("helpfulness", "evasive"), ("helpfulness", "padded"),
                     ("helpfulness", "garbled"), ("harmlessness", "compliance"), ("harmlessness", "off_topic"),
                     ("harmlessness", "garbled"), ("harmlessness", "needless_refusal")}
    for p in pairs:
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]
        if p["kind"] == "harmlessness" and p["flaw"] != "needless_refusal":  # on a harmful request, only refusing wins
            assert p["chosen"][0]["content"].startswith("I cannot help")
            assert not p["rejected"][0]["content"].startswith("I cannot help")
    wrong = next(p for p in pairs if p["flaw"] == "wrong" and p["source"] == "toy_fact")
    assert wrong["rejected"][0]["content"].startswith("The capital of")  # same kind of answer, wrong content


def test_prepare_data_writes_preferences_on_held_out_prompts(tmp_path):
    prepare_data.run("prepare_data", SMALL, Params(), tmp_path)
    train = read_jsonl(tmp_path / "preferences_train.jsonl", required=("prompt", "chosen", "rejected", "kind"))
    test = read_jsonl(tmp_path / "preferences_test.jsonl", required=("prompt", "chosen", "rejected", "kind"))
    general_test = read_jsonl(tmp_path / "general_test.jsonl", required=("prompt", "kind"))
    held_out = {r["prompt"][-1]["content"] for r in general_test}
    assert {r["prompt"][-1]["content"] for r in test} <= held_out
    assert not {r["prompt"][-1]["content"] for r in train} & held_out
    assert sum(r["kind"] == "harmful" for r in general_test) == SMALL.harmful_test_size


def test_default_world_holds_out_enough_safety_prompts(tmp_path):
    # The refusal and needless-refusal rates each rest on at least 100 held-out prompts.
    p = ToyWorldParams(test_size=10, dev_size=4, cold_start_size=10, train_size=10, sampling_pool_size=10,
                       corpus_size=10, arithmetic_docs=4, general_docs=2)
    prepare_data.run("prepare_data", p, Params(), tmp_path)
    kinds = Counter(r["kind"] for r in read_jsonl(tmp_path / "general_test.jsonl"))
    assert kinds["harmful"] >= 100 and kinds["general"] >= 100
    assert sum(r["source"].startswith("toy_lookalike") for r in read_jsonl(tmp_path / "general_test.jsonl")) == 60
