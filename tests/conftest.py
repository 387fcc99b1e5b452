import os
import tempfile

import pytest

# Offline and quiet for every test, whatever the caller's shell has.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread per process: the tiny test models gain nothing from more, and tests that run stage processes
# (DVC, accelerate ranks, Prefect) beside the test process would otherwise oversubscribe the cores, where OpenMP's
# spin-waiting threads slow every process down many times. Set before torch is imported, so subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Trainers log to MLflow: never into the repository's own store (tests that check runs set their own).
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='r1-tests-mlflow-')}/mlflow.db"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny toy tokenizer + Llama directory (random weights), built once per session."""
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
