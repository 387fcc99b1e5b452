import json
import shutil

from tasks import base_model
from tasks.blocks import models, toy_world
from tasks.blocks.params import validate
from tests.tiny import TINY, build_tiny_model


def test_pretrained_source_resolves_a_local_model_directory(tmp_path):
    # A tiny local directory stands in for a Hugging Face id such as Qwen/Qwen2.5-Math-1.5B.
    hub_stand_in = build_tiny_model(tmp_path / "hub" / "tiny-llama")
    params = validate({"base_model": {"source": "pretrained", "model_name_or_path": str(hub_stand_in)},
                       "runtime": {"device": "cpu"}})
    out = tmp_path / "models" / "base"
    metrics = base_model.run("base_model", params.base_model, params, out)
    assert metrics["parameters"] == models.count_parameters(models.load_model(hub_stand_in, params.runtime))
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["stage"] == "base_model" and provenance["parent_model"] == str(hub_stand_in)
    # Its own tokenizer and chat template come along unchanged.
    assert models.load_tokenizer(out).chat_template == models.load_tokenizer(hub_stand_in).chat_template


def test_a_pretraining_cut_short_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    # What a kill leaves: the checkpoints up to then, no model. The re-run goes on from the newest checkpoint (across
    # an epoch boundary here) and writes the weights of the run that was never cut short.
    monkeypatch.chdir(tmp_path)
    train = toy_world.generate_pools(0, {"corpus": 24})["corpus"]
    texts = [p.text() + "\n" + toy_world.r1_completion(p.reasoning(), p.answer) for p in train]
    tokenizer = models.build_toy_tokenizer(texts, TINY.vocab_size)
    p = TINY.model_copy(update={"epochs": 2.0, "batch_size": 8, "seq_len": 64})  # 6 steps, a checkpoint each
    params = validate({"runtime": {"device": "cpu"}})
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    whole = base_model.pretrain_toy(p, params, texts, tokenizer, checkpoints, out, "inputs")
    weights = (out / "model.safetensors").read_bytes()
    assert whole["resumed"] == 0
    assert sorted(c.name for c in checkpoints.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]

    shutil.rmtree(checkpoints / "checkpoint-6")  # killed after step 5's checkpoint: its last step and model lost
    shutil.rmtree(out)
    resumed = base_model.pretrain_toy(p, params, texts, tokenizer, checkpoints, out, "inputs")
    assert resumed["resumed"] == 1
    assert (out / "model.safetensors").read_bytes() == weights
