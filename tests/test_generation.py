import pytest

from tasks.blocks.generation import Sampling, generate, with_system_prompt
from tasks.blocks.params import GenerationParams, RuntimeParams

PROMPTS = [[{"role": "user", "content": text}] for text in
           ["Ana has 5 pens. She buys 3 more.", "Ben has 2 coins.",
            "Kim has 12 books. She uses 4. Then she buys 1 more."]]


def run(tiny, sampling, batch_size=64):
    return generate(tiny, PROMPTS, sampling, GenerationParams(batch_size=batch_size), RuntimeParams(device="cpu"))


def test_n_samples_per_prompt(tiny):
    out = run(tiny, Sampling(n=3, temperature=1.0, max_new_tokens=8))
    assert [len(samples) for samples in out] == [3, 3, 3]
    assert all(0 < s.num_tokens <= 8 for samples in out for s in samples)


def test_batched_greedy_equals_one_at_a_time(tiny):
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=12)
    batched = run(tiny, greedy, batch_size=64)
    single = run(tiny, greedy, batch_size=1)
    assert [s[0].text for s in batched] == [s[0].text for s in single]


def test_same_seed_same_samples(tiny):
    sampling = Sampling(n=2, temperature=1.0, max_new_tokens=8, seed=7)
    assert run(tiny, sampling) == run(tiny, sampling)


def test_vllm_backend_fails_clearly_without_vllm(tiny):
    with pytest.raises(RuntimeError, match="vLLM is not importable"):
        generate(tiny, PROMPTS, Sampling(), GenerationParams(backend="vllm"), RuntimeParams(device="cpu"))


def test_system_prompt_is_prepended_once():
    messages = [{"role": "user", "content": "hi"}]
    assert with_system_prompt(messages, "") == messages
    with_system = with_system_prompt(messages, "Think first.")
    assert with_system[0] == {"role": "system", "content": "Think first."}
    assert with_system_prompt(with_system, "Other.") == with_system


def test_a_generator_loads_once_and_matches_one_off_generation(tiny):
    from tasks.blocks.generation import Generator

    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=12)
    generator = Generator(tiny, GenerationParams(), RuntimeParams(device="cpu"))
    assert generator(PROMPTS, greedy) == run(tiny, greedy)
    assert generator(PROMPTS, greedy) == generator(PROMPTS, greedy)
