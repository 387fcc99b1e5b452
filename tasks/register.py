"""Stage `register`: put the pipeline's final model into the MLflow model registry.

    python -m tasks.register

A new version of `registry.name` holds a copy of models/<registry.model> (logged as artifacts of this stage's run,
so the version never changes when the workspace does), the model's evaluation metrics and the git commit as tags,
and gets the alias `registry.alias` (`candidate`). Whether it becomes `champion` is decided by the promotion gate of
the scheduled-retrain flow (tasks/blocks/promotion.py). DVC re-runs this stage only when the final model or its metrics
change, so each new model is registered once. Writes metrics/registry.json (name, version, alias, run id).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.blocks import models
from tasks.blocks.data import write_json
from tasks.blocks.params import Params, RegistryParams
from tasks.blocks.stage import stage_main
from tasks.blocks.tracking import git_commit, log_metrics, metric_name

OUT = Path("metrics/registry.json")


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="DeepSeek-R1 recipe: the final model of each pipeline run")


def register(params: Params, run: mlflow.ActiveRun) -> dict:
    r = params.registry
    model_dir = Path("models") / r.model
    models.require_model_dir(model_dir)
    metrics_file = Path("metrics") / f"{r.model}.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{metrics_file}: the final model '{r.model}' has no evaluation; add it to "
                                "evaluate.models")
    metrics = {k: v for k, v in json.loads(metrics_file.read_text()).items() if isinstance(v, (int, float))}
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    log_metrics(metrics)
    client = MlflowClient()
    ensure_registered_model(client, r.name)
    tags = {"git_commit": git_commit(), "model": r.model,
            **{f"metric.{metric_name(k)}": f"{v:.6g}" for k, v in metrics.items()}, **models.read_provenance(model_dir)}
    version = client.create_model_version(r.name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(r.name, r.alias, version.version)
    return {"name": r.name, "version": int(version.version), "alias": r.alias, "run_id": run.info.run_id,
            "model": r.model}


def run(stage: str, p: RegistryParams, params: Params, out: Path = OUT) -> dict:
    """Register the final model and write its registry entry to `out`; its metrics are logged by `register`."""
    entry = register(params, mlflow.active_run())
    write_json(out, entry)
    print(f"registered {entry['name']} version {entry['version']} as '{entry['alias']}'")
    return {}


def main() -> None:
    stage_main(("register",), run, __doc__.splitlines()[0], out=str(OUT), section="registry")


if __name__ == "__main__":
    main()
