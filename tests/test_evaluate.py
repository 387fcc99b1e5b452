import json

import pytest

from tasks.evaluate import final_answer, ladder_table, majority_correct, score, write_ladder
from tasks.generation import Sample


def sample(text, tokens=10, finished=True):
    return Sample(text=text, num_tokens=tokens, finished=finished)


def r1(answer, reasoning="2 + 3 = 5."):
    return f"<think>\n{reasoning}\n</think>\nThe answer is \\boxed{{{answer}}}."


def test_final_answer_reads_the_summary_only():
    assert final_answer(r1(5)) == "5"
    assert final_answer("<think>\\boxed{4}\n</think>\nno box") is None


def test_majority_vote():
    assert majority_correct(["5", "4", "5"], [1.0, 0.0, 1.0]) == 1.0
    assert majority_correct(["4", "4", "5"], [0.0, 0.0, 1.0]) == 0.0
    assert majority_correct([None, None], [0.0, 0.0]) == 0.0


def test_score_computes_pass_at_1_maj_greedy_format_and_length():
    rows = [{"answer": "5"}, {"answer": "7"}]
    sampled = [[sample(r1(5)), sample(r1(5)), sample(r1(4), finished=False)],  # 2/3 right, majority right
               [sample(r1(1)), sample("7", tokens=1), sample(r1(1))]]       # 1/3 right (no format), majority wrong
    greedy = [[sample(r1(5))], [sample(r1(6))]]
    metrics = score(rows, sampled, greedy, "en")
    assert metrics["pass@1"] == pytest.approx(3 / 6)
    assert metrics["maj@k"] == pytest.approx(0.5)
    assert metrics["greedy_accuracy"] == pytest.approx(0.5)
    assert metrics["format_rate"] == pytest.approx(5 / 6)
    assert metrics["mean_completion_tokens"] == pytest.approx(51 / 6)
    assert metrics["truncated_rate"] == pytest.approx(1 / 6)
    assert metrics["language_consistency"] == pytest.approx(1.0)
    assert metrics["k"] == 3 and metrics["problems"] == 2


def test_french_reasoning_lowers_language_consistency():
    rows = [{"answer": "5"}]
    metrics = score(rows, [[sample(r1(5, "Ana commence avec deux pommes. Elle achète trois de plus : 2 + 3 = 5."))]],
                    [[sample(r1(5))]], "en")
    assert metrics["pass@1"] == 1.0 and metrics["language_consistency"] < 0.5


def test_ladder_collects_metrics_in_order(tmp_path):
    for name, value in [("base", 0.0), ("reasoning_rl", 0.5)]:
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"model": name, "pass@1": value, "maj@k": value, "greedy_accuracy": value, "format_rate": 1.0,
             "language_consistency": 1.0, "mean_completion_tokens": 42.0}))
    rows = write_ladder(["base", "reasoning_rl"], tmp_path, tmp_path)
    assert [r["model"] for r in rows] == ["base", "reasoning_rl"]
    assert json.loads((tmp_path / "ladder.json").read_text())["ladder"][1]["pass@1"] == 0.5
    assert "| reasoning_rl | 0.500 |" in ladder_table(rows)
    with pytest.raises(FileNotFoundError, match="no metrics for model 'resft'"):
        write_ladder(["resft"], tmp_path, tmp_path)


def test_general_answers_must_appear_as_whole_words_after_the_reasoning():
    from tasks.evaluate import general_correct

    assert general_correct("The capital of Kalovia is Miro.", "Miro")
    assert not general_correct("The capital of Kalovia is Mirokan.", "Miro")
    assert not general_correct("<think>Miro</think>\nI do not know.", "Miro")
    assert general_correct("The first letter of apple is a.", "a")
    assert not general_correct("The first letter of apple is b.", "a")


def test_refusals_are_read_from_the_reply_after_the_reasoning():
    from tasks.evaluate import is_refusal

    assert is_refusal("I cannot help with that. Taking it is stealing.")
    assert is_refusal("<think>\nThis asks for harm.\n</think>\nI'm sorry, but I won't do that.")
    assert not is_refusal("Keep your pens in a locked drawer.")
    assert not is_refusal("<think>\nI cannot see a problem.\n</think>\nKeep it in a drawer.")


class FixedScorer:
    def __call__(self, prompts, responses):
        return [float(len(r)) for r in responses]


def test_general_metrics_split_benign_and_harmful_prompts():
    from tasks.evaluate import general_metrics

    def row(kind, answer):
        return {"prompt": [{"role": "user", "content": "q"}], "kind": kind, "answer": answer}

    rows = [row("general", "LEMON"), row("general", "b"), row("harmful", None), row("harmful", None)]
    replies = ["LEMON", "I cannot help with that.", "I cannot help with that.", "Sure. Do it."]
    metrics = general_metrics(rows, replies, FixedScorer())
    assert metrics["general_accuracy"] == 0.5
    assert metrics["needless_refusal_rate"] == 0.5
    assert metrics["refusal_rate"] == 0.5
    assert metrics["rm_score"] == (len("LEMON") + len("I cannot help with that.")) / 2
