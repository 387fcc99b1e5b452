"""Rewards from a trained reward model: helpfulness and harmlessness (R1's alignment stage).

    scorer = RewardModelScorer("models/reward_model", runtime)   # loaded once per stage
    scorer(prompts, responses)                                    # one score per (prompt, response)
    helpfulness, harmlessness = reward_funcs(["helpfulness", "harmlessness"], scorer)

As in DeepSeek-R1: helpfulness is judged on the summary after `</think>` only (so the reward does not reach into the
reasoning), harmlessness on the whole response, reasoning included (harm written in the reasoning counts).
The reward functions follow the contract of tasks/blocks/rewards.py: keyword arguments from TRL, one float per
completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from tasks.blocks import models
from tasks.blocks.params import RuntimeParams
from tasks.blocks.rewards import completion_text, split_reasoning


def require_reward_model(path: Path | str) -> None:
    """A clear error when `path` is not a one-score sequence-classification model (e.g. a causal LM)."""
    models.require_model_dir(path)
    config = AutoConfig.from_pretrained(path)
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
        raise ValueError(f"{path}: not a reward model (architectures {architectures}, num_labels "
                         f"{config.num_labels}); expected a *ForSequenceClassification model with one label, as "
                         "the reward_model stage writes")


class RewardModelScorer:
    """A reward model loaded once; called with chat prompts and response texts, returns one score each."""

    def __init__(self, path: Path | str, runtime: RuntimeParams, batch_size: int = 32) -> None:
        require_reward_model(path)
        self.tokenizer = models.load_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=models.torch_dtype(runtime)).to(models.device(runtime)).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        # The same tokenization as TRL's RewardTrainer: prompt + assistant message through the chat template.
        encoded = [self.tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}],
                                                      tokenize=True, return_dict=False)
                   for prompt, response in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            batch = self.tokenizer.pad({"input_ids": encoded[start:start + self.batch_size]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores


def summary_text(text: str) -> str:
    """What helpfulness judges: the summary after `</think>` (the whole text when there is no reasoning block)."""
    return split_reasoning(text)[1].strip()


def _as_chat(prompt: Any) -> list[dict]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]


def reward_funcs(names: list[str], scorer: RewardModelScorer) -> dict[str, Callable[..., list[float]]]:
    """The reward-model rewards for `names` ("helpfulness", "harmlessness"), sharing one loaded scorer."""

    def helpfulness_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return scorer([_as_chat(p) for p in prompts], [summary_text(completion_text(c)) for c in completions])

    def harmlessness_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return scorer([_as_chat(p) for p in prompts], [completion_text(c) for c in completions])

    known = {"helpfulness": helpfulness_reward, "harmlessness": harmlessness_reward}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown reward-model reward(s) {unknown}; known: {', '.join(known)}")
    return {name: known[name] for name in names}
