"""More than one process: a training stage re-runs itself under `accelerate launch`.

The stage process (the parent) validates params, checks the launch can work, opens the stage's MLflow run, then runs
the same `python -m tasks.<module> <args>` under `accelerate launch` in its own process group (stopped with every
rank if the parent fails, is interrupted or killed). Each rank finds the run id in R1_STAGE_RUN_ID: the main process
joins that run (TRL's metrics, the stage's metrics), the others log nothing; only the main process writes files.
`runtime.accelerate_config` picks DDP, DeepSpeed ZeRO-2/3 or FSDP (configs/accelerate/); on CPU the ranks talk over
gloo (accelerate picks it when the trainer runs with `use_cpu`). A GRPO stage in vLLM server mode also starts
`trl vllm-serve` on GPUs of its own for the duration of the launch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import yaml

from tasks.blocks.params import RuntimeParams

RUN_ID_ENV = "R1_STAGE_RUN_ID"  # set by the parent for the ranks: the MLflow run they all log to
DEEPSPEED_MISSING = ("{config} uses DeepSpeed, which is not installed here: DeepSpeed needs CUDA GPUs; install it in "
                     "the GPU environment (`pip install deepspeed`, docs/recipes.md 'Scale-out'), or use "
                     "configs/accelerate/ddp.yaml")


class LaunchError(RuntimeError):
    """A multi-process launch cannot work here (missing DeepSpeed, too few GPUs, a bad config); nothing has run."""


def wanted(runtime: RuntimeParams, section=None) -> bool:
    """True in the stage process when params ask for accelerate (or a vLLM server, which needs the training processes
    kept off its GPUs); False in the ranks it launched."""
    return (runtime.num_processes > 1 or runtime.accelerate_config is not None
            or vllm_server_gpus(section) > 0) and not in_rank()


def in_rank() -> bool:
    return RUN_ID_ENV in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def init_rank() -> None:
    """In a launched rank: make plain "cuda" mean this rank's GPU (models loaded outside the trainer, such as the
    reward model scoring alignment RL, would otherwise all land on GPU 0)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def save_once(trainer, out: Path, save: Callable[[], None]) -> bool:
    """Save the trained model once: `save()` on the main process only, then every rank waits for it. Under ZeRO-3 or
    FSDP each rank holds a shard, so every rank takes part in Trainer.save_model, which gathers and writes the
    whole model on the main process. Returns True on the process that wrote."""
    config = trainer.accelerator.state
    sharded = trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and config.deepspeed_plugin.zero_stage == 3)
    main = trainer.accelerator.is_main_process
    if sharded:
        trainer.save_model(str(out))
    elif main:
        save()
    trainer.accelerator.wait_for_everyone()
    if main and trainer.accelerator.num_processes > 1:
        print(f"rank {trainer.accelerator.process_index} of {trainer.accelerator.num_processes}: saved {out}",
              flush=True)
    return main


def read_config(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise LaunchError(f"runtime.accelerate_config: {path} not found (ready ones: configs/accelerate/*.yaml)")
    config = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise LaunchError(f"runtime.accelerate_config: {path} is not an accelerate config (no distributed_type)")
    return config


def shards_weights(config: dict) -> bool:
    """ZeRO-3 and FSDP split the weights across ranks (ZeRO-2 and DDP keep a whole copy on each)."""
    return config["distributed_type"] == "FSDP" or (
        config["distributed_type"] == "DEEPSPEED" and config.get("deepspeed_config", {}).get("zero_stage") == 3)


def check(runtime: RuntimeParams, lora: bool = False, gpus_reserved: int = 0) -> dict:
    """Fail before any work when the launch cannot work here; return the accelerate config (empty: DDP defaults)."""
    from tasks.blocks import models

    if "LOCAL_RANK" in os.environ:  # `accelerate launch -m tasks.sft ...` by hand: every rank would launch again
        raise LaunchError("this stage is already running under a distributed launcher; run it as "
                          "`python -m tasks.<module> <stage>`: it launches its own processes (runtime.num_processes)")
    config = read_config(runtime.accelerate_config) if runtime.accelerate_config else {}
    kind = config.get("distributed_type", "MULTI_GPU")
    cpu = models.device(runtime) == "cpu"
    if kind == "DEEPSPEED":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise LaunchError(DEEPSPEED_MISSING.format(config=runtime.accelerate_config)) from None
    if cpu and kind not in ("MULTI_GPU", "MULTI_CPU", "NO"):
        raise LaunchError(f"runtime.accelerate_config {runtime.accelerate_config} ({kind}) needs CUDA GPUs; on CPU "
                          "use configs/accelerate/ddp.yaml (gloo)")
    if lora and shards_weights(config):
        raise LaunchError(f"LoRA with {runtime.accelerate_config}: the stage merges adapters into full weights, which "
                          "ZeRO-3/FSDP keep sharded; use configs/accelerate/zero2.yaml or ddp.yaml with LoRA")
    if not cpu:
        import torch

        if runtime.num_processes + gpus_reserved > torch.cuda.device_count():
            server = f" + {gpus_reserved} GPU(s) for the vLLM server" if gpus_reserved else ""
            raise LaunchError(f"runtime.num_processes ({runtime.num_processes}){server} need more than the "
                              f"{torch.cuda.device_count()} visible GPU(s)")
    return config


def command(runtime: RuntimeParams, module: str, args: list[str]) -> list[str]:
    """`accelerate launch` of `python -m module args`, one process per GPU (or per CPU share)."""
    from tasks.blocks import models

    precision = models.precision(runtime)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(runtime.num_processes),
           "--num_machines", "1", "--mixed_precision", "no" if precision == "fp32" else precision,
           "--dynamo_backend", "no", "--main_process_port", "0"]  # port 0: a free one, so two stages never clash
    if runtime.accelerate_config:
        cmd += ["--config_file", runtime.accelerate_config]
    else:
        cmd += ["--multi_gpu"]  # torchrun's launcher: on CPU the ranks use gloo (the trainers run with use_cpu)
    return [*cmd, "-m", module, *args]


def relaunch(runtime: RuntimeParams, run_id: str, module: str, env: dict[str, str] | None = None) -> None:
    """Run this stage's command (`python -m module`, this process's arguments) under `accelerate launch`; every rank
    logs to the MLflow run `run_id`."""
    env = {**os.environ, **(env or {}), RUN_ID_ENV: run_id}
    cmd = command(runtime, module, sys.argv[1:])
    print(f"launching {runtime.num_processes} processes: {' '.join(cmd)}", flush=True)
    returncode = wait_or_kill(run_in_process_group(cmd, env))
    if returncode:
        raise RuntimeError(f"accelerate launch exited with code {returncode}; see the ranks' log above")


def vllm_server_gpus(section) -> int:
    """GPUs a stage's vLLM server takes (GRPO with use_vllm in server mode), 0 otherwise."""
    if getattr(section, "use_vllm", False) and section.vllm_mode == "server":
        return section.vllm_server_gpus
    return 0


def split_gpus(section) -> tuple[str, str]:
    """(training GPUs, server GPUs) as CUDA_VISIBLE_DEVICES values: the server takes the last visible ones."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    n = vllm_server_gpus(section)
    return ",".join(ids[:-n]), ",".join(ids[-n:])


def training_env(section) -> dict[str, str]:
    """The ranks' environment: off the vLLM server's GPUs when the stage runs one."""
    return {"CUDA_VISIBLE_DEVICES": split_gpus(section)[0]} if vllm_server_gpus(section) else {}


def vllm_server_for(section):
    """The stage's vLLM server when its params ask for one (GRPO, use_vllm, server mode), else nothing."""
    if not vllm_server_gpus(section):
        return nullcontext()
    return vllm_server(section.model, section.vllm_server_port, split_gpus(section)[1],
                       section.vllm_server_timeout, Path("checkpoints") / "vllm-serve.log")


@contextmanager
def vllm_server(model: str, port: int, gpus: str, timeout: float, log: Path) -> Iterator[str]:
    """`trl vllm-serve` for `model` on 127.0.0.1:port and the GPUs `gpus`, healthy while in the block."""
    cmd = ["trl", "vllm-serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--tensor_parallel_size", str(len(gpus.split(",")))]
    with serve("vLLM server", cmd, f"http://127.0.0.1:{port}", {"CUDA_VISIBLE_DEVICES": gpus}, timeout, log) as url:
        print(f"vLLM server for {model} on GPU(s) {gpus}: {url} (log: {log})", flush=True)
        yield url


@contextmanager
def serve(name: str, cmd: list[str], url: str, env: dict[str, str], timeout: float, log: Path) -> Iterator[str]:
    """Run a server in its own process group, wait until `url`/health answers, yield `url`; always kill the group
    on the way out (the block's end, its failure, or a server that never became healthy)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                   start_new_session=True, preexec_fn=_term_when_parent_dies)
    try:
        wait_healthy(name, url, process, timeout, log)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_healthy(name: str, url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll the server's /health until it answers 200; fail with its log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {name} exited with code {process.returncode} before it was healthy; its log "
                               f"({log}) ends:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the {name} at {url} was not healthy after {timeout:.0f} s; its log ({log}) ends:\n"
                       f"{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def run_in_process_group(cmd: list[str], env: dict[str, str], term_when_parent_dies: bool = True) -> subprocess.Popen:
    """Start `cmd` in a new process group (a session of its own), SIGTERMed by the kernel if this process dies (even by
    SIGKILL, as when a flow cancels the stage): accelerate's launcher then stops its ranks. Without
    `term_when_parent_dies` the command sees to that itself (the flow's guard, flows/guard.py, run from a flow whose
    threads make a `preexec_fn` unsafe)."""
    preexec = _term_when_parent_dies if term_when_parent_dies else None
    return subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=preexec)


def wait_or_kill(process: subprocess.Popen, grace: float = 30) -> int:
    """Wait for `process`; if we fail or are interrupted (Ctrl-C, SIGTERM), stop its group first: SIGTERM, which
    accelerate's launcher passes on to the ranks (they run in process groups of their own), then SIGKILL."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, which kills the group


def _term_when_parent_dies() -> None:
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
