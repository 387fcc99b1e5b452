import json

import pytest

from tasks import evaluate
from tasks.blocks import models
from tasks.blocks.generation import Sample
from tasks.blocks.params import apply_overrides, read_yaml, validate
from tasks.evaluate import curves, judge, judge_general, ladder_table, scaling_curves, summarize, write_ladder


def sample(text, tokens=10, finished=True):
    return Sample(text=text, num_tokens=tokens, finished=finished)


def r1(answer, reasoning="2 + 3 = 5."):
    return f"<think>\n{reasoning}\n</think>\nThe answer is \\boxed{{{answer}}}."


def params(**overrides):
    return validate(apply_overrides(read_yaml("params.yaml"), overrides))


def scored(rows, sampled, greedy, general=(), replies=(), scorer=None):
    p = params().evaluate
    records = judge(rows, sampled, greedy, "en")
    general_records = judge_general(list(general), list(replies), scorer) if general else []
    curve = curves(records, p)
    return summarize(records, general_records, curve, p), records, curve


def test_score_computes_pass_at_1_maj_greedy_format_and_length_with_intervals():
    rows = [{"id": "a", "answer": "5"}, {"id": "b", "answer": "7"}]
    sampled = [[sample(r1(5)), sample(r1(5)), sample(r1(4), finished=False)],  # 2/3 right, majority right
               [sample(r1(1)), sample("7", tokens=1), sample(r1(1))]]       # 1/3 right (no format), majority wrong
    greedy = [[sample(r1(5))], [sample(r1(6))]]
    metrics, records, _ = scored(rows, sampled, greedy)
    assert metrics["pass@1"] == pytest.approx(3 / 6)
    assert metrics["maj@k"] == pytest.approx(0.5)
    assert metrics["greedy_accuracy"] == pytest.approx(0.5)
    assert metrics["format_rate"] == pytest.approx(5 / 6)
    assert metrics["mean_completion_tokens"] == pytest.approx(51 / 6)
    assert metrics["truncated_rate"] == pytest.approx(1 / 6)
    assert metrics["language_consistency"] == pytest.approx(1.0)
    assert metrics["k"] == 3 and metrics["n"] == 2
    for key in ("pass@1", "maj@k", "greedy_accuracy", "format_rate", "mean_completion_tokens"):
        lo, hi = metrics[f"{key}_ci95"]
        assert lo <= metrics[key] <= hi
    assert metrics["pass@1_ci95"] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]  # two problems: 2/3 and 1/3
    assert records[1]["answer"] == ["1", "7", "1"]  # "7" without a box: the judge's own extraction


def test_maj_at_k_counts_the_answers_accuracy_judges():
    # Plain "Answer: N" endings (the base's pretraining form) are read by the judge, so the vote counts them too.
    rows = [{"id": "a", "answer": "5"}, {"id": "b", "answer": "3"}]
    sampled = [[sample("2 + 3 = 5. Answer: 5"), sample("Answer: 5"), sample("Answer: 4")],
               [sample("Answer: 3"), sample("Answer: 2"), sample("Answer: 2")]]
    metrics, _, _ = scored(rows, sampled, [[sample("x")], [sample("y")]])
    assert metrics["pass@1"] == pytest.approx(3 / 6)
    assert metrics["maj@k"] == pytest.approx(0.5)


def test_curves_and_scaling_curves():
    rows = [{"id": str(i), "answer": "5"} for i in range(4)]
    texts = [r1(5), r1(4), r1(4), r1(3)]  # one right of four: pass@4 = 1, maj@4 = 0
    sampled = [[sample(t) for t in texts] for _ in rows]
    metrics, records, curve = scored(rows, sampled, [[sample(r1(5))] for _ in rows])
    assert metrics["pass@k_curve"] == {"1": 0.25, "2": pytest.approx(0.5), "4": 1.0}
    assert metrics["maj@k_curve"]["1"] == pytest.approx(0.25) and metrics["maj@k_curve"]["4"] == 0.0
    for record in records:
        record["rm"] = [2.0, 0.0, 0.0, 1.0]  # the reward model likes the right sample best
    curve = curves(records, params().evaluate)
    tts = scaling_curves("m", curve, params().evaluate)
    assert tts["N"] == [1, 2, 4]
    assert tts["verifier"] == [0.25, pytest.approx(0.5), 1.0]
    assert tts["reward_model"][-1] == 1.0 and tts["majority_vote"][-1] == 0.0
    assert len(tts["reward_model_ci95"]) == 3


def test_french_reasoning_lowers_language_consistency():
    rows = [{"id": "a", "answer": "5"}, {"id": "b", "answer": "5"}]
    french = sample(r1(5, "Ana commence avec deux pommes. Elle achète trois de plus : 2 + 3 = 5."))
    metrics, _, _ = scored(rows, [[french], [french]], [[sample(r1(5))]] * 2)
    assert metrics["pass@1"] == 1.0 and metrics["language_consistency"] < 0.5


def write_evals(directory, name, correct, refusal=None):
    problems = [{"id": str(i), "correct": c, "format": [1.0] * len(c), "language": [1.0] * len(c),
                 "answer": ["5" if x else "4" for x in c], "tokens": [10] * len(c), "truncated": [0.0] * len(c),
                 "greedy_correct": c[0]} for i, c in enumerate(correct)]
    general = [{"id": f"h{i}", "kind": "harmful", "refusal": r} for i, r in enumerate(refusal or [])]
    metrics = {"model": name, "pass@1": sum(map(sum, correct)) / sum(map(len, correct)), "n": len(correct)}
    (directory / f"{name}.json").write_text(json.dumps({"metrics": metrics, "problems": problems,
                                                         "general": general}))


def test_ladder_has_intervals_and_paired_deltas_of_the_recipe(tmp_path):
    p = params(**{"evaluate.models": ["base", "cold_start_sft", "reasoning_rl"], "evaluate.prompted": {}})
    write_evals(tmp_path, "base", [[0.0, 0.0]] * 50)
    write_evals(tmp_path, "cold_start_sft", [[0.0, 0.0]] * 25 + [[1.0, 0.0]] * 25)
    write_evals(tmp_path, "reasoning_rl", [[0.0, 0.0]] * 25 + [[1.0, 0.0]] * 25)
    rows, deltas = write_ladder(p, tmp_path, tmp_path, tmp_path)
    assert [r["model"] for r in rows] == ["base", "cold_start_sft", "reasoning_rl"]
    by = {(d["from"], d["to"], d["metric"]): d for d in deltas}
    rise = by[("base", "cold_start_sft", "pass@1")]
    assert rise["delta"] == pytest.approx(0.25) and rise["excludes_zero"] and rise["n"] == 50
    flat = by[("cold_start_sft", "reasoning_rl", "pass@1")]
    assert flat["delta"] == 0.0 and not flat["excludes_zero"]
    assert json.loads((tmp_path / "ladder_deltas.json").read_text())["deltas"] == deltas
    table = (tmp_path / "ladder.md").read_text()
    assert "| base | cold_start_sft | pass@1 | +0.250 * |" in table
    assert "| cold_start_sft | reasoning_rl | pass@1 | +0.000 |" in table
    with pytest.raises(FileNotFoundError, match="no evaluation of 'resft'"):
        write_ladder(params(**{"evaluate.models": ["resft"], "evaluate.prompted": {}}), tmp_path, tmp_path, tmp_path)


def test_rungs_follow_the_recipe():
    rungs = {(a, b): keys for a, b, keys in evaluate.rungs(params())}
    assert ("base", "cold_start_sft") in rungs and ("cold_start_sft", "reasoning_rl") in rungs
    assert "refusal_rate" in rungs[("resft", "alignment_rl")]
    assert ("resft", "distill_small") in rungs and ("resft", "distill_tiny") in rungs
    assert ("student_rl", "distill_tiny") in rungs  # student_rl starts from the tiny student's base
    assert ("base_r1_zero_prompt", "r1_zero") in rungs  # R1-Zero against the base under the same prompt


def test_ladder_table_shows_plus_minus():
    row = {"model": "m", "n": 200, "pass@1": 0.3, "pass@1_ci95": [0.25, 0.35]}
    assert "| m | 200 | 0.300 ± 0.050 |" in ladder_table([row])


def test_prompted_evaluation_uses_the_other_stage_template():
    model_dir, template = evaluate.target("base_r1_zero_prompt", params())
    assert str(model_dir) == "models/base"
    assert template == models.plain_prompt_template(params().r1_zero.prompt_template)
    assert evaluate.target("resft", params()) == (evaluate.Path("models/resft"), None)


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
    def row(i, kind, answer):
        return {"id": str(i), "prompt": [{"role": "user", "content": "q"}], "kind": kind, "answer": answer}

    general = [row(0, "general", "LEMON"), row(1, "general", "b"), row(2, "harmful", None), row(3, "harmful", None)]
    replies = ["LEMON", "I cannot help with that.", "I cannot help with that.", "Sure. Do it."]
    rows = [{"id": "a", "answer": "5"}, {"id": "b", "answer": "5"}]
    metrics, _, _ = scored(rows, [[sample(r1(5))]] * 2, [[sample(r1(5))]] * 2, general, replies, FixedScorer())
    assert metrics["general_accuracy"] == 0.5
    assert metrics["needless_refusal_rate"] == 0.5
    assert metrics["refusal_rate"] == 0.5
    assert metrics["refusal_rate_ci95"] == [0.0, 1.0]
    assert metrics["n_benign"] == 2 and metrics["n_harmful"] == 2
    assert metrics["rm_score"] == (len("LEMON") + len("I cannot help with that.")) / 2
