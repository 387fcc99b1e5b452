import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tasks import register
from tasks.blocks.params import Params, RegistryParams
from tasks.blocks.stage import stage_run


def test_final_model_is_registered_with_metrics_and_candidate_alias(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "final").symlink_to(tiny)
    params = Params(registry=RegistryParams(name="r1-test", model="final"))
    with pytest.raises(FileNotFoundError, match="no evaluation"):
        with stage_run("register", params.registry, "test"):
            register.register(params, mlflow.active_run())
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "final.json").write_text(json.dumps({"model": "final", "pass@1": 0.25}))
    versions = []
    for _ in range(2):
        with stage_run("register", params.registry, "test") as run:
            versions.append(register.register(params, run))
    assert [v["version"] for v in versions] == [1, 2]
    client = MlflowClient()
    latest = client.get_model_version_by_alias("r1-test", "candidate")
    assert int(latest.version) == 2 and latest.run_id == versions[1]["run_id"]
    assert latest.tags["metric.pass_at_1"] == "0.25" and latest.tags["model"] == "final"
    # The version holds its own copy of the model: later runs that overwrite models/ do not change it.
    copy = Path(mlflow.artifacts.download_artifacts(latest.source, dst_path=str(tmp_path / "copy")))
    assert (copy / "config.json").exists() and (copy / "model.safetensors").exists()
