import json

import pytest

from tasks import prepare_data, reward_model
from tasks.blocks.data import DataError
from tasks.blocks.model_rewards import RewardModelScorer, require_reward_model, reward_funcs
from tasks.blocks.params import Params, RewardModelParams, RuntimeParams, ToyWorldParams
from tests.tiny import build_tiny_reward_model

CPU = RuntimeParams(device="cpu")


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def pair(**fields):
    row = {"id": "p1", "prompt": [{"role": "user", "content": "Hello!"}],
           "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
           "rejected": [{"role": "assistant", "content": "I am not sure."}]}
    return {**row, **fields}


def test_bad_preference_rows_fail_with_the_problem_named(tmp_path):
    missing = pair()
    del missing["rejected"]
    with pytest.raises(DataError, match="rejected"):
        reward_model.load_pairs(write_pairs(tmp_path / "a.jsonl", [missing]))
    same = pair(rejected=[{"role": "assistant", "content": "Hello! How can I help?"}])
    with pytest.raises(ValueError, match="'p1' has identical chosen and rejected"):
        reward_model.load_pairs(write_pairs(tmp_path / "b.jsonl", [same]))


def test_a_causal_lm_is_not_a_reward_model(tiny):
    with pytest.raises(ValueError, match="not a reward model"):
        require_reward_model(tiny)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        require_reward_model(tiny.parent / "missing")


def test_scorer_and_reward_functions(tiny, tmp_path):
    scorer = RewardModelScorer(build_tiny_reward_model(tiny, tmp_path / "rm"), CPU, batch_size=2)
    prompts = [[{"role": "user", "content": "Hello!"}]] * 3
    scores = scorer(prompts, ["Hello!", "I am not sure.", "Goodbye."])
    assert len(scores) == 3 and len(set(scores)) == 3
    helpfulness = reward_funcs(["helpfulness"], scorer)["helpfulness"]
    harmlessness = reward_funcs(["harmlessness"], scorer)["harmlessness"]
    completion = "<think>\nbe kind\n</think>\nHello!"
    # Helpfulness sees the summary only (R1): the same score as the bare reply; harmlessness sees everything.
    assert helpfulness(prompts=prompts[:1], completions=[completion]) == pytest.approx([scores[0]], abs=1e-5)
    assert harmlessness(prompts=prompts[:1], completions=[completion]) != pytest.approx([scores[0]], abs=1e-5)
    with pytest.raises(ValueError, match="unknown reward-model reward"):
        reward_funcs(["honesty"], scorer)


def test_training_raises_held_out_pairwise_accuracy_above_chance(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = ToyWorldParams(train_size=20, test_size=20, dev_size=4, cold_start_size=20, sampling_pool_size=20,
                         corpus_size=20, arithmetic_docs=4, general_docs=10, harmful_requests=40, harmful_test_size=20,
                         lookalike_test_size=45)
    prepare_data.run("prepare_data", toy, Params(), tmp_path / "d")
    untrained = reward_model.pairwise_accuracy(
        RewardModelScorer(build_tiny_reward_model(tiny, tmp_path / "head"), CPU),
        reward_model.load_pairs(str(tmp_path / "d/preferences_test.jsonl")))
    p = RewardModelParams(model=str(tiny), data=str(tmp_path / "d/preferences_train.jsonl"),
                          test_data=str(tmp_path / "d/preferences_test.jsonl"), epochs=2.0, learning_rate=3e-3)
    metrics = reward_model.run("reward_model", p, Params(runtime=CPU), tmp_path / "rm")
    require_reward_model(tmp_path / "rm")
    assert metrics["test_pairs"] > 100
    assert metrics["pairwise_accuracy"] >= 0.75 > untrained["pairwise_accuracy"]
    # chance is 0.5; off-topic and garbled non-refusals are hard pairs for a 2-epoch head
    assert metrics["pairwise_accuracy/harmlessness"] >= 0.7
