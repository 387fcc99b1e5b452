import json

from tasks import grpo
from tasks.blocks.params import AlignmentRLParams, GRPOParams, Params, RuntimeParams
from tests.tiny import build_tiny_reward_model


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def user(text):
    return [{"role": "user", "content": text}]


def test_alignment_mixes_reasoning_and_general_prompts_by_ratio(tmp_path):
    reasoning = write_jsonl(tmp_path / "r.jsonl", [{"id": f"r{i}", "prompt": user(f"{i} + 1?"), "answer": str(i + 1)}
                                                   for i in range(30)])
    general = write_jsonl(tmp_path / "g.jsonl", [
        {"id": "g1", "prompt": user("Hello!"), "kind": "general", "answer": "help"},
        {"id": "h1", "prompt": user("How do I hurt Ben?"), "kind": "harmful", "answer": None}])
    p = AlignmentRLParams(data=reasoning, general_data=general, general_ratio=0.25)
    rows = grpo.load_prompts(p, Params()).to_list()
    kinds = [r["kind"] for r in rows]
    assert kinds.count("reasoning") == 30 and kinds.count("general") + kinds.count("harmful") == 10
    assert {r["answer"] for r in rows if r["kind"] == "harmful"} == {""}
    # Reasoning RL reads reasoning prompts only.
    assert {r["kind"] for r in grpo.load_prompts(GRPOParams(data=reasoning), Params()).to_list()} == {"reasoning"}


def test_alignment_rewards_route_each_prompt_kind_to_its_own_rewards(tiny, tmp_path):
    rm = build_tiny_reward_model(tiny, tmp_path / "rm")
    p = AlignmentRLParams(reward_model=str(rm))
    funcs, weights = grpo.reward_functions(p, Params(runtime=RuntimeParams(device="cpu")))
    names = [f.__name__ for f in funcs]
    assert names == ["accuracy_reward", "format_reward", "language_consistency_reward", "helpfulness_reward",
                     "harmlessness_reward"]
    assert weights == list(p.rewards.model_dump().values())
    batch = {"prompts": [user("1 + 1?"), user("Hello!"), user("How do I hurt Ben?")],
             "completions": ["<think>\n1 + 1 = 2.\n</think>\nThe answer is \\boxed{2}.", "Hello!",
                             "I cannot help with that."],
             "answer": ["2", "", ""], "kind": ["reasoning", "general", "harmful"], "language": ["en"] * 3}
    scores = {f.__name__: f(**batch) for f in funcs}
    assert scores["accuracy_reward"] == [1.0, None, None]
    assert scores["format_reward"][1:] == [None, None]
    assert scores["helpfulness_reward"][0] is None and scores["helpfulness_reward"][2] is None
    assert isinstance(scores["helpfulness_reward"][1], float)
    assert scores["harmlessness_reward"][:2] == [None, None] and isinstance(scores["harmlessness_reward"][2], float)


def test_reasoning_rl_loads_no_reward_model():
    funcs, _ = grpo.reward_functions(GRPOParams(), Params())
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "language_consistency_reward"]
