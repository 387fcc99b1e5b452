import hashlib
import re

from tasks import prepare_data, toy_world
from tasks.data import read_jsonl
from tasks.params import ToyWorldParams

SMALL = ToyWorldParams(train_size=300, test_size=40, cold_start_size=50, general_docs=20)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    prepare_data.run(SMALL, tmp_path / "a")
    prepare_data.run(SMALL, tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_other_seed_gives_other_problems(tmp_path):
    prepare_data.run(SMALL, tmp_path / "a")
    prepare_data.run(SMALL.model_copy(update={"seed": 1}), tmp_path / "b")
    assert digest(tmp_path / "a")["train.jsonl"] != digest(tmp_path / "b")["train.jsonl"]


def test_splits_are_disjoint_by_text_and_by_numbers():
    train, test = toy_world.generate_problems(0, 2000, 200, 12, 3)
    assert len(train) == 2000 and len(test) == 200
    assert not {p.text() for p in train} & {p.text() for p in test}
    assert not {p.numbers for p in train} & {p.numbers for p in test}


def test_problems_have_one_to_three_steps_and_consistent_gold_reasoning():
    train, _ = toy_world.generate_problems(3, 500, 50, 12, 3)
    assert {len(p.ops) for p in train} == {1, 2, 3}
    for problem in train:
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", problem.reasoning())
        assert len(steps) == len(problem.ops)
        for a, op, b, c in steps:
            assert toy_world.apply(int(a), op, int(b)) == int(c)
        assert int(steps[-1][3]) == problem.answer > 0


def test_cold_start_rows_are_in_the_r1_format(tmp_path):
    prepare_data.run(SMALL, tmp_path)
    rows = read_jsonl(tmp_path / "cold_start.jsonl", required=("prompt", "completion", "answer"))
    assert len(rows) == SMALL.cold_start_size
    pattern = re.compile(r"^<think>\n(.+)\n</think>\nThe answer is \\boxed\{(\d+)\}\.$", re.S)
    for row in rows:
        match = pattern.match(row["completion"][0]["content"])
        assert match and match.group(2) == row["answer"]
        assert row["prompt"][0]["role"] == "user"
        terse = row["source"] == "toy_arith_terse"
        assert ("\n" not in match.group(1)) == terse
        if terse:  # the one line is the whole chain, nested from the left, equal to the answer
            expression, result = match.group(1).rstrip(".").split(" = ")
            first, *rest = re.findall(r"\d+|[-+*]", expression.replace("(", "").replace(")", ""))
            value = int(first)
            for op, n in zip(rest[::2], rest[1::2]):
                value = toy_world.apply(value, op, int(n))
            assert result == row["answer"] and value == int(result)
    terse_share = sum(r["source"] == "toy_arith_terse" for r in rows) / len(rows)
    assert 0.3 < terse_share < 0.7


def test_corpus_is_plain_text_with_some_french_reasoning(tmp_path):
    prepare_data.run(SMALL, tmp_path)
    rows = read_jsonl(tmp_path / "corpus.jsonl", required=("id", "text", "source"))
    assert not any("<|im_start|>" in r["text"] or "<think>" in r["text"] for r in rows)
    french = [r for r in rows if r["source"] == "toy_arith_fr"]
    assert 0.15 * SMALL.train_size < len(french) < 0.45 * SMALL.train_size
    assert all("commence avec" in r["text"] for r in french)
    assert sum(r["source"] == "toy_general" for r in rows) == SMALL.general_docs


def test_impossible_sizes_fail_clearly():
    import pytest

    with pytest.raises(ValueError, match="cannot make"):
        toy_world.generate_problems(0, 100_000, 10, 2, 1)


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
    prepare_data.run(SMALL, tmp_path)
    train = read_jsonl(tmp_path / "preferences_train.jsonl", required=("prompt", "chosen", "rejected", "kind"))
    test = read_jsonl(tmp_path / "preferences_test.jsonl", required=("prompt", "chosen", "rejected", "kind"))
    general_test = read_jsonl(tmp_path / "general_test.jsonl", required=("prompt", "kind"))
    held_out = {r["prompt"][-1]["content"] for r in general_test}
    assert {r["prompt"][-1]["content"] for r in test} <= held_out
    assert not {r["prompt"][-1]["content"] for r in train} & held_out
    assert sum(r["kind"] == "harmful" for r in general_test) == SMALL.harmful_test_size
