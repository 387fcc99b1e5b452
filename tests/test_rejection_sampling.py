import pytest

from tasks import rejection_sampling as rs
from tasks.blocks import toy_world
from tasks.blocks.params import RejectionSamplingParams, validate


def s(prompt_id="p1", text="<think>\n2 + 3 = 5.\n</think>\nThe answer is \\boxed{5}.", num_tokens=20, finished=True,
      accuracy=1.0, format=1.0, language_consistency=1.0):
    return {"prompt_id": prompt_id, "text": text, "num_tokens": num_tokens, "finished": finished,
            "accuracy": accuracy, "format": format, "language_consistency": language_consistency}


def test_each_filter_drops_exactly_its_failures():
    assert rs.filter_correct([s(), s(accuracy=0.0)]) == [s()]
    assert rs.filter_format([s(), s(format=0.0)]) == [s()]
    assert rs.filter_language([s(), s(language_consistency=0.5)], 0.95) == [s()]
    assert rs.filter_truncated([s(), s(finished=False)]) == [s()]
    assert rs.filter_too_long([s(num_tokens=90), s(num_tokens=91)], 90) == [s(num_tokens=90)]
    looping = s(text="so we add one more so we add one more so we add one more so we add one more")
    assert rs.filter_repetition([s(), looping], n=6, max_repeats=2) == [s()]


def test_repeated_ngrams_are_counted():
    assert rs.max_ngram_repeats("a b c a b c a b c", 3) == 3
    assert rs.max_ngram_repeats("a b", 3) == 0


def test_deduplicate_and_cap_per_prompt():
    same = [s(text="x  y"), s(text="x y"), s(prompt_id="p2", text="x y")]
    assert rs.deduplicate(same) == [same[0], same[2]]
    many = [s(text=str(i)) for i in range(5)] + [s(prompt_id="p2")]
    assert [x["prompt_id"] for x in rs.cap_per_prompt(many, 2)] == ["p1", "p1", "p2"]


def test_apply_filters_reports_drops_per_filter():
    p = RejectionSamplingParams(keep_per_prompt=1)
    samples = [s(), s(accuracy=0.0), s(format=0.0), s(finished=False), s(), s(text="other")]
    kept, dropped = rs.apply_filters(samples, p)
    assert kept == [s()]
    assert dropped == {"correct": 1, "format": 1, "language": 0, "truncated": 1, "too_long": 0, "repetition": 0,
                       "duplicate": 1, "per_prompt_cap": 1}


def test_pass_rate_histogram():
    samples = [s("a"), s("a", accuracy=0.0), s("b", accuracy=0.0), s("b", accuracy=0.0)]
    assert rs.pass_rate_histogram(samples, 2) == {"0/2": 1, "1/2": 1, "2/2": 0}


@pytest.mark.parametrize("ratio, n_general", [(0.25, 10), (0.5, 30), (0.0, 0)])
def test_blend_ratio(ratio, n_general):
    reasoning = [{"id": f"r{i}"} for i in range(30)]
    general = [{"id": f"g{i}"} for i in range(100)]
    rows, chosen = rs.blend(reasoning, general, ratio, seed=0)
    assert chosen == n_general and len(rows) == 30 + n_general
    assert len({r["id"] for r in rows}) == len(rows)
    assert rows == rs.blend(reasoning, general, ratio, seed=0)[0]  # seeded


def test_blend_upsamples_a_small_general_pool_to_the_ratio():
    rows, chosen = rs.blend([{"id": f"r{i}"} for i in range(30)], [{"id": "g1"}, {"id": "g2"}], 0.25, seed=0)
    assert chosen == 10 and len(rows) == 40
    assert len({r["id"] for r in rows}) == 40  # repeats get ids of their own: SFT data rejects duplicate ids
    assert sum(r["id"].startswith("g1") for r in rows) == sum(r["id"].startswith("g2") for r in rows) == 5


def test_blend_without_reasoning_rows_is_the_general_rows():
    rows, chosen = rs.blend([], [{"id": "g1"}, {"id": "g2"}], 0.25, seed=0)
    assert chosen == 2 and sorted(r["id"] for r in rows) == ["g1", "g2"]


def test_bad_params_fail_before_generation():
    with pytest.raises(ValueError, match="samples_per_prompt"):
        validate({"rejection_sampling": {"samples_per_prompt": 0}})
    with pytest.raises(ValueError, match="min_language_consistency"):
        validate({"rejection_sampling": {"min_language_consistency": 1.5}})


def test_general_tasks_are_split_without_overlap():
    facts = toy_world.fact_table(0, 30)
    train, test = toy_world.general_rows(0, facts, 10)
    assert len(test) == 10 and len(train) == len(toy_world.general_tasks(0, facts)) - 10
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in test}
    assert {r["source"] for r in train + test} == {"toy_fact", "toy_string", "toy_chat"}
    for row in train + test:
        assert row["answer"] in row["response"]


def test_sampling_resumes_from_finished_shards(tmp_path, monkeypatch, tiny):
    from tasks.blocks import generation

    model = tiny
    data = tmp_path / "train.jsonl"
    data.write_text("")
    params = validate({"runtime": {"device": "cpu"},
                       "rejection_sampling": {"model": str(model), "data": str(data), "samples_per_prompt": 2,
                                              "max_new_tokens": 4, "shard_size": 2}})
    rows = [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"Ana has {i} pens."}], "answer": str(i)}
            for i in range(5)]
    calls = []
    real_call = generation.Generator.__call__
    monkeypatch.setattr(generation.Generator, "__call__",
                        lambda self, prompts, *a, **k: calls.append(len(prompts)) or real_call(self, prompts, *a, **k))
    first = rs.sample_shards(rows, params.rejection_sampling, params, tmp_path / "shards")
    assert calls == [2, 2, 1] and len(first) == 10
    (tmp_path / "shards" / "shard-0000002.jsonl").unlink()  # as if killed while sampling the second shard
    calls.clear()
    again = rs.sample_shards(rows, params.rejection_sampling, params, tmp_path / "shards")
    assert calls == [2] and len(again) == 10
    # Other params: the old shards are not reused.
    changed = validate({**params.model_dump(), "rejection_sampling": {**params.rejection_sampling.model_dump(),
                                                                      "temperature": 0.9}})
    calls.clear()
    rs.sample_shards(rows, changed.rejection_sampling, changed, tmp_path / "shards")
    assert calls == [2, 2, 1]


def test_missing_model_fails_before_generation(tmp_path):
    params = validate({"rejection_sampling": {"model": str(tmp_path / "nope")}})
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        rs.run("rejection_sampling", params.rejection_sampling, params, tmp_path / "out")
