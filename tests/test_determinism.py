"""Same params and seed, same results: the data stages byte for byte, a CPU training run metric for metric."""

import torch

from tasks import base_model, prepare_data, sft
from tasks import rejection_sampling as rs
from tasks.blocks import models, toy_world
from tasks.blocks.params import Params, ToyWorldParams, validate
from tasks.blocks.stage import run_stage
from tests.tiny import TINY

TOY = ToyWorldParams(train_size=60, test_size=8, dev_size=4, cold_start_size=16, sampling_pool_size=20, corpus_size=60,
                     arithmetic_docs=4, general_docs=4, facts=6, general_test_size=4,
                     harmful_requests=10, harmful_test_size=5,
                     lookalike_test_size=4)


def files(folder):
    """Every output file's bytes; not the resume stamp, which hashes input paths and mtimes, not data."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != "inputs.fingerprint"}


def test_data_stages_write_the_same_bytes_twice(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    runs = []
    for name in ("first", "second"):
        prepare_data.run("prepare_data", TOY, Params(), tmp_path / name / "toy")
        params = validate({"runtime": {"device": "cpu"}, "rejection_sampling": {
            "model": str(tiny), "data": f"{name}/toy/train.jsonl", "num_prompts": 6, "samples_per_prompt": 2,
            "max_new_tokens": 8, "shard_size": 4, "min_kept_samples": 0,
            "non_reasoning_data": f"{name}/toy/general_train.jsonl"}})
        report = rs.run("rejection_sampling", params.rejection_sampling, params, tmp_path / name / "rs")
        runs.append(files(tmp_path / name))
    assert report["samples"] == 12 and "rs/blend.jsonl" in runs[0] and "rs/shards/shard-0000004.jsonl" in runs[0]
    assert runs[0] == runs[1]


def test_a_cpu_training_run_gives_the_same_metrics_and_weights_twice(tmp_path, monkeypatch, tiny):
    prepare_data.run("prepare_data", TOY, Params(), tmp_path / "toy")
    params = validate({"runtime": {"device": "cpu"}, "cold_start_sft": {
        "model": str(tiny), "data": str(tmp_path / "toy" / "cold_start.jsonl"), "epochs": 2.0, "batch_size": 4}})
    results = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)  # each run its own checkpoints/: the second must not resume the first
        metrics = sft.run("cold_start_sft", params.cold_start_sft, params, tmp_path / name / "model")
        results.append((metrics, (tmp_path / name / "model" / "model.safetensors").read_bytes()))
    assert results[0][0]["resumed"] == 0 and results[0][0]["train_rows"] == 16
    assert results[0] == results[1]


def test_a_rerun_with_another_seed_starts_over_instead_of_resuming(tmp_path, monkeypatch, tiny):
    # DVC re-runs a stage when `seed` (or runtime, prompt...) changes; its checkpoints, saved under the old params,
    # must not be resumed then, though the stage's own section is unchanged.
    prepare_data.run("prepare_data", TOY, Params(), tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    section = {"model": str(tiny), "data": str(tmp_path / "toy" / "cold_start.jsonl"), "epochs": 1.0,
               "batch_size": 4, "save_steps": 2}
    resumed = []
    for seed in (42, 42, 7):
        params = validate({"seed": seed, "runtime": {"device": "cpu"}, "cold_start_sft": section})
        resumed.append(sft.run("cold_start_sft", params.cold_start_sft, params, tmp_path / "model")["resumed"])
    assert resumed == [0, 1, 0]  # same inputs: the finished checkpoint is resumed; another seed: trained afresh


def test_the_toy_base_model_is_the_same_twice(tmp_path, monkeypatch):
    # Its weights start random: torch's generator starts from a random seed in each process (and from wherever the
    # process left it), so the stage seeds it; unseeded, each `base_model` run gave another base, and every stage
    # after it other numbers.
    monkeypatch.chdir(tmp_path)
    train = toy_world.generate_pools(0, {"corpus": 40})["corpus"]
    texts = [p.text() + "\n" + toy_world.r1_completion(p.reasoning(), p.answer) for p in train]
    tokenizer = models.build_toy_tokenizer(texts, TINY.vocab_size)
    p = TINY.model_copy(update={"epochs": 1.0, "batch_size": 8, "seq_len": 64})
    params = validate({"runtime": {"device": "cpu"}})
    weights = []
    for name in ("first", "second"):
        base_model.pretrain_toy(p, params, texts, tokenizer, tmp_path / name / "checkpoints", tmp_path / name / "out",
                                "inputs")
        weights.append((tmp_path / name / "out" / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_training_stages_draw_from_the_seed(tmp_path, monkeypatch):
    # What TRL initialises before its Trainer seeds (a reward model's score head, a LoRA adapter) draws from here.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = validate({"runtime": {"device": "cpu"}})
    draws = [run_stage("cold_start_sft", "cold_start_sft", params.cold_start_sft, params,
                       lambda *args: {"draw": torch.rand(1).item()}, tmp_path / "out", trains=True)["draw"]
             for _ in range(2)]
    assert draws[0] == draws[1]
