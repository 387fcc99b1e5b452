import threading
import time

import pytest

from tasks.blocks import rewards
from tasks.blocks.rewards import (
    ITEM_TIMEOUT_S,
    REWARD_FUNCS,
    accuracy_reward,
    completion_text,
    extract_boxed,
    format_reward,
    get_reward_funcs,
    is_correct,
    language_consistency_reward,
    language_share,
    score_batch,
    split_reasoning,
)

TOWER = r"\boxed{9^{9^{9^{9}}}}"  # sympy would evaluate this for hours
EN = "Ana has 5 apples. She buys 3 more, so 5 + 3 = 8. Then she gives away 2, and 8 - 2 = 6 apples are left."
FR = "Il a trois pommes et elle a deux pommes, donc trois plus deux font cinq pommes. Ensuite il donne une pomme."


def accuracy(text, gold):
    return accuracy_reward(completions=[text], answer=[gold])[0]


def conversation(text):
    return [{"role": "assistant", "content": text}]


# ----------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("text, gold", [
    (r"<think>half of one</think> The answer is \boxed{\frac{1}{2}}.", "0.5"),
    (r"\boxed{0.5}", r"\frac12"),
    (r"\boxed{x^2+2x+1}", "(x+1)^2"),
    (r"\boxed{(x+1)^2}", "x^2 + 2x + 1"),
    (r"\boxed{[1, 3)}", "[1,3)"),
    (r"\boxed{\{3, 2, 1\}}", r"\{1,2,3\}"),
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{1000}", "1,000"),
    (r"\boxed{\$18}", "18"),
    (r"\boxed{18.00}", "18"),
    (r"\boxed{18}", "$18"),
    (r"\boxed{6}", r"\boxed{6}"),
    ("The answer is 7.", "7"),
    (r"Ana had 5 apples.</think> So \boxed{6}", "6"),  # <think> was in the prompt (R1 chat template)
])
def test_accuracy_equivalent(text, gold):
    assert accuracy(text, gold) == 1.0


@pytest.mark.parametrize("text, gold", [
    (r"\boxed{0.6}", r"\frac12"),
    (r"\boxed{x^2+2x}", "(x+1)^2"),
    (r"\boxed{(1, 3)}", "[1,3)"),
    (r"\boxed{\{1, 2\}}", r"\{1,2,3\}"),
    (r"\boxed{100}", "1,000"),
    ("The answer is 8.", "7"),
])
def test_accuracy_not_equivalent(text, gold):
    assert accuracy(text, gold) == 0.0


def test_boxed_answer_in_reasoning_does_not_count():
    assert accuracy(r"<think>maybe \boxed{5}</think> I am not sure.", "5") == 0.0
    assert accuracy(r"<think>maybe \boxed{5}</think> So \boxed{5}.", "5") == 1.0


def test_hedging_between_answers_scores_zero():
    assert accuracy(r"<think>hmm</think> \boxed{3} or \boxed{4}", "3") == 0.0
    assert accuracy(r"<think>hmm</think> \boxed{3}, that is \boxed{ 3 }", "3") == 1.0
    assert accuracy(r"<think>hmm</think> \boxed{\frac{1}{2}} = \boxed{0.5}", "1/2") == 1.0


def test_unclosed_think_and_empty_score_zero():
    assert accuracy(r"<think>so the answer is \boxed{5}", "5") == 0.0
    assert accuracy(r"<think>a</think> \boxed{5} <think>more", "5") == 0.0
    assert accuracy(r"so the answer is \boxed{5}", "5") == 1.0
    assert accuracy("", "5") == 0.0
    assert accuracy(r"<think>\boxed{5}</think>", "5") == 0.0
    assert accuracy(r"\boxed{}", "5") == 0.0
    assert accuracy_reward(completions=[[], conversation("")], answer=["5", "5"]) == [0.0, 0.0]


def test_accuracy_conversational_and_plain_forms_with_extra_kwargs():
    text = r"<think>2 + 2</think> \boxed{4}"
    rewards = accuracy_reward(prompts=[[{"role": "user", "content": "2+2?"}]] * 3,
                              completions=[conversation(text), text, conversation(r"\boxed{5}")],
                              completion_ids=[[1, 2]] * 3, answer=["4", "4", "4"], language=["en"] * 3,
                              trainer_state=None)
    assert rewards == [1.0, 1.0, 0.0]
    assert is_correct(text, "4") and not is_correct(text, "5")


@pytest.mark.parametrize("text, gold, expected", [
    (TOWER, "5", 0.0),
    (TOWER, "9^{9^{9^{9}}}", 1.0),  # identical text: equal without evaluating
    (r"\boxed{" + "1" * 200_000 + "}", "5", 0.0),
    ("The answer is " + "1" * 200_000, "5", 0.0),
    (r"\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}", "1", 0.0),
    ("(" * 5_000 + "1" + ")" * 5_000, "1", 0.0),
    ("\x00" * 1_000, "5", 0.0),
    ("<think>\x00</think> \\boxed{5}\x00", "5", 1.0),
    (r"\boxed{5}", r"\frac{{{", 0.0),
    (r"\boxed{5}", "", 0.0),
])
def test_hostile_inputs_are_scored_quickly(text, gold, expected):
    start = time.monotonic()
    reward = accuracy(text, gold)
    assert time.monotonic() - start < 5.0
    assert reward == expected


def test_deep_nesting_is_rejected_without_waiting_for_the_timeout():
    start = time.monotonic()
    assert accuracy(r"\boxed{" + "{" * 40 + "1" + "}" * 40 + "}", "1") == 0.0
    assert accuracy("The answer is " + "(" * 40 + "1" + ")" * 40, "1") == 0.0
    assert time.monotonic() - start < 1.0


def test_judge_recovers_after_a_timeout():
    start = time.monotonic()
    assert accuracy_reward([TOWER, r"\boxed{\frac{10}{2}}"], answer=["5", "5"]) == [0.0, 1.0]
    assert time.monotonic() - start < ITEM_TIMEOUT_S + 5.0


def test_accuracy_reward_off_the_main_thread():
    results = {}

    def run():
        results["rewards"] = accuracy_reward([r"\boxed{\frac{8}{2}}", TOWER], answer=["4", "3"])

    start = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert results.get("rewards") == [1.0, 0.0]
    assert time.monotonic() - start < 10.0


# ----------------------------------------------------------------------------- format

@pytest.mark.parametrize("text", [
    r"<think>2 + 2 = 4</think> The answer is \boxed{4}.",
    "\n  <think>\nstep\n</think>\n\\boxed{4}",
])
def test_format_positive(text):
    assert format_reward([text]) == [1.0]
    assert format_reward(completions=[conversation(text)], answer=["4"], prompts=None) == [1.0]


@pytest.mark.parametrize("text", [
    r"<think>a</think><think>b</think> \boxed{4}",  # two think blocks
    r"<think>2 + 2 = 4</think>",  # missing summary
    r"<think>2 + 2 = 4</think>   ",
    r"<think>2 + 2 = 4</think> The answer is 4.",  # no boxed answer
    r"<think>2 + 2 = 4</think> \boxed{}",
    r"Sure! <think>2 + 2 = 4</think> \boxed{4}",  # text before <think>
    r"<think>  </think> \boxed{4}",  # empty reasoning
    r"<think>2 + 2 = 4 \boxed{4}",  # unclosed
    r"2 + 2 = 4</think> \boxed{4}",  # no opening tag
    r"</think>2 + 2<think> \boxed{4}",  # wrong order
    "",
])
def test_format_negative(text):
    assert format_reward([text]) == [0.0]


# ----------------------------------------------------------------------------- language consistency

def test_language_consistency():
    english, french = f"<think>{EN}</think> \\boxed{{6}}", f"<think>{FR}</think> \\boxed{{6}}"
    mixed = f"<think>{EN} {FR}</think> \\boxed{{6}}"
    rewards = language_consistency_reward([english, french, mixed], language="en")
    assert rewards[0] == 1.0
    assert rewards[1] < 0.2
    assert 0.3 < rewards[2] < 0.8
    as_french = language_consistency_reward([french, english], language="fr")
    assert as_french[0] == 1.0
    assert as_french[1] < 0.5


def test_language_kwarg_list_or_str():
    french = conversation(f"<think>{FR}</think> \\boxed{{6}}")
    assert language_consistency_reward([french, french], language=["en", "fr"])[1] == 1.0
    assert language_consistency_reward([french, french], language=["en", "fr"])[0] < 0.2
    assert language_consistency_reward([french, french], language="fr", answer=["6", "6"]) == [1.0, 1.0]


def test_cjk_words_are_foreign():
    # let, us, compute, 三, 个, 苹, 果, and, the, total: 4 of 10 words are Chinese characters
    assert language_share("Let us compute 三个苹果 and the total") == pytest.approx(0.6)
    assert language_share("Посчитаем яблоки apples") == pytest.approx(1 / 3)


def test_only_the_reasoning_is_judged():
    assert language_consistency_reward([f"<think>{EN}</think> La réponse est donc six."]) == [1.0]
    assert language_consistency_reward([f"<think>{FR}"])[0] < 0.2  # unclosed: reasoning runs to the end
    assert language_consistency_reward([FR])[0] < 0.2  # no tags: the whole completion
    assert language_consistency_reward(["<think>x + y = 3</think> \\boxed{3}"]) == [1.0]  # no words


def test_unsupported_language_is_rejected():
    with pytest.raises(ValueError, match="klingon"):
        language_share("hello", "klingon")


# ----------------------------------------------------------------------------- helpers

def test_helpers():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    assert completion_text([]) == ""
    assert split_reasoning("<think>r</think> s") == ("r", " s")
    assert split_reasoning("r</think> s") == ("r", " s")
    assert split_reasoning("no tags") == (None, "no tags")
    assert extract_boxed(r"\boxed{\frac{1}{2}} and \boxed{\{1,2\}} and \boxed{x") == [r"\frac{1}{2}", r"\{1,2\}"]
    assert extract_boxed(r"\boxed{\boxed{3}} \boxed {4}") == [r"\boxed{3}", "4"]
    assert extract_boxed(r"\boxed{3 \boxed{4}") == ["4"]


# ----------------------------------------------------------------------------- batch and registry

def test_score_batch_matches_direct_calls():
    completions = [
        f"<think>{EN}</think> The answer is \\boxed{{6}}.",
        conversation(f"<think>{FR}</think> \\boxed{{5}}"),
        r"<think>hmm</think> \boxed{3} or \boxed{4}",
        r"<think>\boxed{5}</think> no idea",
        r"\boxed{\frac{1}{2}}",
        "The answer is 7.",
        TOWER,
        "",
    ]
    answers = ["6", "5", "3", "5", "0.5", "7", "5", "1"]
    direct = {name: REWARD_FUNCS[name](completions=completions, answer=answers) for name in REWARD_FUNCS}
    start = time.monotonic()
    batch = score_batch(iter(completions), iter(answers), processes=2, chunk_size=3)
    assert time.monotonic() - start < ITEM_TIMEOUT_S + 10.0
    assert batch == direct
    assert direct["accuracy"] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert score_batch(completions[:3], None, reward_names=["format"], processes=1) == {"format": direct["format"][:3]}


def test_reward_registry():
    assert get_reward_funcs(["accuracy", "format", "language_consistency"]) == [
        accuracy_reward, format_reward, language_consistency_reward]
    with pytest.raises(ValueError, match="'nope'") as error:
        get_reward_funcs(["accuracy", "nope"])
    assert all(name in str(error.value) for name in REWARD_FUNCS)
    with pytest.raises(ValueError, match="nope"):
        score_batch(["x"], ["1"], reward_names=["nope"])


def test_rewards_are_routed_by_prompt_kind():
    """In a mixed batch each prompt gets only the rewards of its kind; the others return None (TRL skips them)."""
    calls = []

    def helpfulness_reward(completions, prompts, **kwargs):
        calls.append((list(completions), list(prompts)))
        return [1.0] * len(completions)

    accuracy = rewards.only_for("reasoning", rewards.accuracy_reward)
    helpfulness = rewards.only_for("general", helpfulness_reward)
    assert accuracy.__name__ == "accuracy_reward" and helpfulness.__name__ == "helpfulness_reward"
    completions = ["<think>\n2 + 3 = 5.\n</think>\n\\boxed{5}", "Hello!", "\\boxed{4}", "I cannot help."]
    columns = {"prompts": ["p0", "p1", "p2", "p3"], "answer": ["5", "", "5", ""],
               "kind": ["reasoning", "general", "reasoning", "harmful"], "trainer_state": object()}
    assert accuracy(completions=completions, **columns) == [1.0, None, 0.0, None]
    assert helpfulness(completions=completions, **columns) == [None, 1.0, None, None]
    assert calls == [(["Hello!"], ["p1"])]  # only the general prompt's columns reached the function
    # Without a kind column (e.g. reasoning RL data) every prompt is of the reward's kind.
    assert accuracy(completions=completions[:1], answer=["5"]) == [1.0]
    assert rewards.PROMPT_KIND.keys() >= rewards.REWARD_FUNCS.keys()


# ----------------------------------------------------------------------------- the judge's answer classes
# Each class scored 0.0 under the ANTLR 4.9.3 parser that dvc's hydra pin forces (or, for the decimal comma, read the
# gold as a set); the judge processes run with their own ANTLR runtime (rewards.JUDGE_LIBS).

@pytest.mark.parametrize("text, gold", [
    (r"\boxed{20\%}", "20"),
    (r"\boxed{20\%}", r"20\%"),
    (r"\boxed{20}", r"20\%"),
    (r"\boxed{0.2}", r"20\%"),
    (r"\boxed{20 \%}", r"$20\%$"),
    (r"<think>a fifth</think> \boxed{20\%}", r"\frac{1}{5}"),
    ("The answer is 20%.", "20"),
])
def test_percent_answers_verify(text, gold):
    assert accuracy(text, gold) == 1.0


def test_percent_answers_still_need_the_right_number():
    assert accuracy(r"\boxed{25\%}", "20") == 0.0
    assert accuracy(r"\boxed{20\%}", "21") == 0.0


@pytest.mark.parametrize("text, gold, expected", [
    (r"\boxed{1.22}", "1,22", 1.0),    # a decimal comma: math-verify reads 1.22, not the set {1, 22}
    (r"\boxed{0.5}", "0,5", 1.0),
    (r"\boxed{\{1, 22\}}", "1,22", 0.0),
    (r"\boxed{1000}", "1,000", 1.0),  # thousands separators keep their meaning
    (r"\boxed{1234.5}", "1,234.5", 1.0),
    (r"\boxed{\{3, 4\}}", "3, 4", 1.0),  # a plain list with spaces is still a set
])
def test_comma_golds_read_as_math_verify_reads_them(text, gold, expected):
    assert accuracy(text, gold) == expected


def test_the_judge_refuses_to_start_on_the_old_parser_runtime(tmp_path, monkeypatch):
    monkeypatch.setattr(rewards, "JUDGE_LIBS", tmp_path / "missing")
    worker = rewards._Worker()
    with pytest.raises(RuntimeError, match=r"antlr4-python3-runtime 4\.9\.3 .*--install-judge"):
        worker.call(rewards._verify, [r"\boxed{1}"], "1")


# ----------------------------------------------------------------------------- the final answer

@pytest.mark.parametrize("text, expected", [
    (r"<think>2 + 3 = 5</think> The answer is \boxed{5}.", "5"),
    (r"<think>\boxed{4}</think> So \boxed{ 1 / 2 }.", "1/2"),       # the summary's answer, whitespace removed
    (r"\boxed{3} or \boxed{4}", "3 ; 4"),                           # a hedge is one answer of its own
    (r"\boxed{3} and again \boxed{3}", "3"),
    ("Problem: ... Solution: 2 + 3 = 5. Answer: 5", "5"),          # no box: math-verify's own extraction
    ("<think>no end", None),
    ("I do not know.", None),
])
def test_final_answer(text, expected):
    assert rewards.final_answer(text) == expected


def test_score_batch_returns_the_final_answers_it_judged():
    texts = [r"\boxed{5}", "The answer is 7.", "<think>unclosed", r"\boxed{3} or \boxed{4}"]
    scores = score_batch(texts, ["5", "7", "1", "3"], ("accuracy",), processes=1, final_answers=True)
    assert scores["accuracy"] == [1.0, 1.0, 0.0, 0.0]
    assert scores["final_answer"] == ["5", "7", None, "3 ; 4"]
    assert scores["final_answer"] == [rewards.final_answer(t) for t in texts]
