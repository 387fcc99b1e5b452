"""Models: the toy tokenizer and tiny Llama, loading, devices and precision, LoRA, provenance.

Device and precision are decided here and only here, from params and the hardware. torch, transformers and
tokenizers are imported where they are used: stages that only check a model directory (the registry) start without
them.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.blocks.data import keep_if_same_inputs, write_json
from tasks.blocks.params import BaseModelParams, LoraParams, ParamsError, RuntimeParams
from tasks.blocks.tracking import git_commit

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

THINK_TOKENS = ["<think>", "</think>"]
PLAIN_GGML_TYPES = {0: "F32", 1: "F16", 30: "BF16"}  # ggml tensor types that are values, not quantized blocks
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML. {% generation %} marks the assistant tokens, so TRL's `assistant_only_loss` can mask everything else.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


def device(runtime: RuntimeParams) -> str:
    import torch

    if runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    return runtime.device


def precision(runtime: RuntimeParams) -> str:
    if runtime.precision != "auto":
        return runtime.precision
    import torch

    return "bf16" if device(runtime) == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def trainer_kwargs(runtime: RuntimeParams) -> dict:
    """Device/precision arguments for any TRL config (TRL defaults to bf16, which CPUs here do not want)."""
    prec = precision(runtime)
    return {"use_cpu": device(runtime) == "cpu", "bf16": prec == "bf16", "fp16": prec == "fp16"}


def torch_dtype(runtime: RuntimeParams) -> torch.dtype:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision(runtime)]


def build_toy_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with ChatML special tokens; <think> and </think> are ordinary added tokens so that TRL's
    `skip_special_tokens=True` decoding keeps them (or every format reward would be 0)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Digits are split one by one (as Llama and Qwen do), so "24" is the same tokens after a space, in a sum and
    # inside \boxed{}: a tiny model can then copy a number from its reasoning into its answer.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                      pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
    wrapped.add_tokens(THINK_TOKENS)  # special_tokens=False: ordinary added tokens
    return wrapped


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def require_chat_template(tokenizer, key: str, path: Path | str) -> None:
    """A clear error, naming the param, when the model at `path` has no chat template: every stage but R1-Zero (its
    own `prompt_template`) prompts and trains through it."""
    if not tokenizer.chat_template:
        raise ParamsError(f"{key}: {path} has no chat template (no chat_template.jinja, none in "
                          "tokenizer_config.json): the SFT, RL and evaluation stages render prompts and completions "
                          "through it. Use a model that ships one (an instruct model, or a base model such as "
                          "Qwen2.5's), or add one to its tokenizer_config.json; a GRPO stage with `prompt_template` "
                          "set does without")


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template ends an assistant turn with (`<|im_end|>` in ChatML, `<|eot_id|>` in Llama 3),
    when it is one special or added token; None when the template ends turns in plain text (or cannot say)."""
    from jinja2 import TemplateError

    probe = "r1-end-of-turn-probe"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": probe},
                {"role": "user", "content": "y"}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except (TemplateError, TypeError, ValueError):
        return None
    if probe not in text:
        return None
    ids = tokenizer(text[text.rindex(probe) + len(probe):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(tokenizer, generation_config) -> list[int]:
    """Every token that ends a completion, as TRL's GRPOTrainer counts them: the tokenizer's eos, then each eos of
    the model's generation config (where a model lists its end-of-turn token)."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = [tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])]
    return list(dict.fromkeys(i for i in ids if i is not None))


def stop_at_end_of_turn(model, tokenizer) -> None:
    """Make the model's generation config end a completion at the chat template's end-of-turn token too.

    A pretrained base model (Qwen2.5-Math-1.5B: eos `<|endoftext|>`) ends a chat turn with another token than its
    eos (`<|im_end|>`), and TRL's rollouts, the Generator and vLLM stop only at the eos ids of the tokenizer and of
    the generation config: after cold-start SFT every completion would run on to the length limit (clipped in RL,
    dropped as truncated by rejection sampling). Instruct releases list both ids, as this does. A model whose eos
    already is its end-of-turn token (the toy models) is left as it is."""
    config = getattr(model, "generation_config", None)
    if config is None or not model.can_generate():
        return
    turn_end = end_of_turn_id(tokenizer)
    if turn_end is None or turn_end in stop_token_ids(tokenizer, config):
        return
    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    config.eos_token_id = [*(eos if isinstance(eos, list) else [eos] if eos is not None else []), turn_end]


def load_model(path: Path | str, runtime: RuntimeParams):
    from transformers import AutoModelForCausalLM

    require_model_dir(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(runtime)).to(device(runtime))


def require_plain_gguf(path: Path, key: str) -> None:
    """A clear error, naming the param, unless the GGUF file holds plain (F32, F16 or BF16) weights: the stages
    train and save full-precision weights, and a quantized file would be trained as its lossy dequantization."""
    from transformers.integrations.gguf import GgufHeader
    from transformers.integrations.gguf.dequant import GGML_NAME

    try:
        header = GgufHeader.from_file(str(path))  # metadata and tensor table only, no tensor data
    except ValueError as exc:
        raise ParamsError(f"{key}: {path}: cannot read it as a GGUF model ({exc})") from None
    if not header.tensors:
        raise ParamsError(f"{key}: {path} holds no weights (a vocabulary-only GGUF such as llama.cpp's "
                          "ggml-vocab-*.gguf): point it at a model")
    quantized = sorted({GGML_NAME.get(t, str(t)) for t in header.ggml_types.values() if t not in PLAIN_GGML_TYPES})
    if quantized:
        raise ParamsError(f"{key}: {path} holds quantized weights ({', '.join(quantized)}); training needs plain "
                          "weights: point it at the original model (a Hugging Face id or directory) or at an F32, "
                          "F16 or BF16 GGUF of it (llama.cpp: convert_hf_to_gguf.py --outtype f16), or, knowing the "
                          "weights stay lossy, at a directory `python -m tasks.smollm2 convert FILE DIR` "
                          "dequantizes it into")


def load_pretrained(name: str, key: str, runtime: RuntimeParams):
    """(tokenizer, model) of a pretrained model named by the param `key`: a Hugging Face id, a local directory, or a
    local `.gguf` file with plain weights. Checked before the weights load: a missing directory, a quantized or
    weightless GGUF, a tokenizer without a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    source, kwargs = name, {}
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{key}: {path}: no such GGUF file")
        require_plain_gguf(path, key)
        source, kwargs = str(path.parent), {"gguf_file": path.name}
    elif name.startswith(("/", ".", "~")):  # a local path, never a Hub id: say so rather than "invalid repo id"
        require_model_dir(path, "fetch or convert it first (SmolLM2-135M-Instruct's: `make smollm2`)", key)
        source = str(path)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    require_chat_template(tokenizer, key, name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(runtime), **kwargs)
    if kwargs and getattr(model, "hf_quantizer", None) is not None:
        # Plain weights (checked above) still come through transformers' GGUF quantizer, which marks the model
        # neither trainable nor serialisable; nothing in it is quantized, so it is an ordinary model once unmarked.
        model.hf_quantizer.remove_quantization_config(model)
    return tokenizer, model


def require_model_dir(path: Path | str, hint: str = "run the stage that writes it first", key: str = "") -> None:
    """A plain model directory is there (its config.json), else an error naming the param `key` (if given) and what
    to do (`hint`)."""
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{key + ': ' if key else ''}{path}: not a model directory (no config.json); {hint}")


def lora_config(lora: LoraParams, task_type: str = "CAUSAL_LM"):
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type)


def save_model(model, tokenizer, out: Path) -> None:
    """Save a plain model directory; LoRA adapters are merged so every later stage loads the same way."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    stop_at_end_of_turn(model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def resume_checkpoint(checkpoints: Path, fingerprint: str) -> str | None:
    """The newest complete `checkpoint-N` a Trainer wrote for these same inputs, to resume a stage killed
    mid-training.

    Checkpoints of other inputs (params or upstream model changed since) are deleted, never resumed; so is one the
    kill cut short (a Trainer writes trainer_state.json last; resuming from a checkpoint without it crashes)."""
    from transformers.trainer_utils import get_last_checkpoint

    keep_if_same_inputs(checkpoints, fingerprint)
    for checkpoint in checkpoints.glob("checkpoint-*"):
        if checkpoint.is_dir() and not (checkpoint / "trainer_state.json").exists():
            shutil.rmtree(checkpoint)
    return get_last_checkpoint(str(checkpoints))


def params_hash(params) -> str:
    return hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:16]


def write_provenance(out: Path, stage: str, parent: str | None, params) -> None:
    """What made this model: the stage, its parent, its params and code, and its MLflow run (the report reads that
    run's curves, not the latest run of the stage, which may be a discarded experiment's)."""
    import mlflow

    run = mlflow.active_run()
    write_json(out / "provenance.json", {"stage": stage, "parent_model": parent, "params_hash": params_hash(params),
                                         "git_commit": git_commit(), "mlflow_run_id": run.info.run_id if run else None})


def read_provenance(path: Path | str) -> dict:
    file = Path(path) / "provenance.json"
    return json.loads(file.read_text()) if file.exists() else {}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_parameters_on_disk(path: Path | str) -> int:
    """Parameters of a saved model, read from its safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def plain_prompt_template(template: str) -> str:
    """A chat template that renders each user turn into `template` (one `{prompt}` slot) and each assistant turn as
    plain text: how R1-Zero prompts a base model ("... User: {prompt}. Assistant:"), usable by TRL and evaluation."""
    before, after = template.split("{prompt}")
    return ("{%- for message in messages %}{%- if message['role'] == 'user' %}"
            "{{ " + json.dumps(before) + " + message['content'] + " + json.dumps(after) + " }}"
            "{%- elif message['role'] == 'assistant' %}"
            "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
            "{%- endif %}{%- endfor %}")


def tiny_llama_config(p: BaseModelParams, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden_size, num_hidden_layers=p.num_layers,
                       num_attention_heads=p.num_heads, num_key_value_heads=p.num_heads,
                       intermediate_size=p.intermediate_size, max_position_embeddings=p.max_position_embeddings,
                       tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
