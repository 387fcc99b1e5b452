import json

from tasks import base_model
from tasks.blocks import models
from tasks.blocks.params import validate
from tests.tiny import build_tiny_model


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
