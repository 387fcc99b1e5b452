"""A tiny toy tokenizer + Llama, built in seconds, shared by the unit tests."""

from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from tasks.blocks import models, toy_world
from tasks.blocks.params import BaseModelParams

TINY = BaseModelParams(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128)
# The same with 32-dim attention heads: vLLM's CPU attention takes head sizes 32, 64, 80, ... (not TINY's 16).
TINY_VLLM = TINY.model_copy(update={"hidden_size": 64, "intermediate_size": 128})


def build_tiny_model(out: Path, shape: BaseModelParams = TINY) -> Path:
    train = toy_world.generate_pools(0, {"corpus": 200})["corpus"]
    texts = [p.text() + "\n" + toy_world.r1_completion(p.reasoning(), p.answer) for p in train]
    tokenizer = models.build_toy_tokenizer(texts, shape.vocab_size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(models.tiny_llama_config(shape, tokenizer))
    models.save_model(model, tokenizer, out)
    return out


def build_tiny_reward_model(tiny: Path, out: Path) -> Path:
    """The tiny model with a one-score classification head (random weights): a reward-model directory."""
    from transformers import LlamaForSequenceClassification

    tokenizer = models.load_tokenizer(tiny)
    config = models.tiny_llama_config(TINY, tokenizer)
    config.num_labels = 1
    torch.manual_seed(0)
    models.save_model(LlamaForSequenceClassification(config), tokenizer, out)
    return out
