import pytest

from tasks.blocks import models
from tasks.blocks.params import RuntimeParams


def test_think_tags_survive_trl_style_decoding(tiny):
    # TRL decodes completions with skip_special_tokens=True: <think> must be an ordinary added token.
    tokenizer = models.load_tokenizer(tiny)
    text = "<think>\n1 + 2 = 3.\n</think>\nThe answer is \\boxed{3}.<|im_end|>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<think>") in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.removesuffix("<|im_end|>")


def test_chat_template_marks_only_assistant_tokens_for_the_loss(tiny):
    tokenizer = models.load_tokenizer(tiny)
    messages = [{"role": "user", "content": "Ana has 2 pens."},
                {"role": "assistant", "content": "<think>\nx\n</think>"}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "<think>\nx\n</think><|im_end|>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nAna has 2 pens.<|im_end|>\n<|im_start|>assistant\n"


def test_cpu_runtime_never_asks_for_bf16():
    kwargs = models.trainer_kwargs(RuntimeParams(device="cpu"))
    assert kwargs == {"use_cpu": True, "bf16": False, "fp16": False}


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        models.load_model(tmp_path / "nothing", RuntimeParams())


def test_plain_prompt_template_prompts_like_r1_zero(tiny):
    tokenizer = models.load_tokenizer(tiny)
    tokenizer.chat_template = models.plain_prompt_template("Think in <think> </think>, answer in \\boxed{}.\n"
                                                           "Problem: {prompt}\nSolution:")
    prompt = [{"role": "user", "content": "Ana has 2 pens. How many?"}]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text == "Think in <think> </think>, answer in \\boxed{}.\nProblem: Ana has 2 pens. How many?\nSolution:"
    # Training on a full conversation: only the answer (and its end-of-text) is the assistant's.
    conversation = prompt + [{"role": "assistant", "content": " 2 pens. Answer: 2"}]
    encoded = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == " 2 pens. Answer: 2" + tokenizer.eos_token


@pytest.mark.parametrize("stage", ["cold_start_sft", "reasoning_rl", "alignment_rl", "reward_model", "evaluate",
                                   "base_model"])
def test_each_stage_names_a_missing_model_before_any_work(stage, tmp_path, tiny, monkeypatch):
    from tasks import base_model, evaluate, grpo, reward_model, sft
    from tasks.blocks.params import validate

    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "models" / "nope")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "prompt": [{"role": "user", "content": "1 + 1?"}], "answer": "2"}\n')
    section = {"cold_start_sft": {"model": missing}, "reasoning_rl": {"model": missing},
               "alignment_rl": {"model": str(tiny), "data": str(rows), "reward_model": missing},
               "reward_model": {"model": missing},
               "evaluate": {"data": str(rows), "general_data": None},
               "base_model": {"source": "pretrained", "model_name_or_path": missing}}[stage]
    params = validate({stage: section})
    run = {"cold_start_sft": lambda: sft.run(stage, params.cold_start_sft, params, tmp_path / "out"),
           "reasoning_rl": lambda: grpo.run(stage, params.reasoning_rl, params, tmp_path / "out"),
           "alignment_rl": lambda: grpo.run(stage, params.alignment_rl, params, tmp_path / "out"),
           "reward_model": lambda: reward_model.run("reward_model", params.reward_model, params, tmp_path / "out"),
           "evaluate": lambda: evaluate.evaluate_model("nope", params),
           "base_model": lambda: base_model.run("base_model", params.base_model, params, tmp_path / "out")}[stage]
    with pytest.raises(FileNotFoundError) as error:
        run()
    assert "models/nope" in str(error.value) and "not a model directory" in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "checkpoints").exists()


def test_resume_skips_a_checkpoint_the_kill_cut_short(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    assert models.resume_checkpoint(checkpoints, "inputs-a") is None
    for step in (2, 4, 6):
        (checkpoints / f"checkpoint-{step}").mkdir()
        (checkpoints / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
    for step in (2, 4):  # trainer_state.json is what a Trainer writes last
        (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert models.resume_checkpoint(checkpoints, "inputs-a") == str(checkpoints / "checkpoint-4")
    assert not (checkpoints / "checkpoint-6").exists()
    assert models.resume_checkpoint(checkpoints, "inputs-b") is None  # other inputs: nothing is resumed
