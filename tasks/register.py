"""Stage `register`: put the pipeline's final model into the MLflow model registry.

    python -m tasks.register

A new version of `registry.name` holds a copy of models/<registry.model> (logged as artifacts of this stage's run,
so the version never changes when the workspace does), the model's evaluation metrics and the git commit as tags,
and gets the alias `registry.alias` (`candidate`). Whether it becomes `champion` is decided by the promotion gate of
the scheduled-retrain flow. DVC re-runs this stage only when the final model or its metrics change, so each new
model is registered once. Writes metrics/registry.json (name, version, alias, run id).

The promotion gate (`gate_decision`, `promote`) lives here too, so that the rule is one small function next to the
registry it acts on: the candidate becomes `champion` when there is no champion yet, or when none of the gate
metrics (`promotion.gate`) is worse than the champion's by more than `promotion.tolerance`; otherwise it becomes
`challenger` and its version is tagged with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks import models
from tasks.data import write_json
from tasks.params import Params, PromotionParams, load_params
from tasks.tracking import git_commit, log_metrics, metric_name, stage_run

OUT = Path("metrics/registry.json")
CHAMPION, CHALLENGER = "champion", "challenger"


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
    tags = {"git_commit": git_commit(), "model": r.model, **{f"metric.{metric_name(k)}": f"{v:.6g}" for k, v in metrics.items()},
            **models.read_provenance(model_dir)}
    version = client.create_model_version(r.name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(r.name, r.alias, version.version)
    return {"name": r.name, "version": int(version.version), "alias": r.alias, "run_id": run.info.run_id,
            "model": r.model}


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def gate_decision(candidate: dict[str, float], champion: dict[str, float] | None,
                  gate: PromotionParams) -> Decision:
    """Promote `candidate` over `champion` (metrics by name, as in metrics/<model>.json), or say why not."""
    missing = sorted(k for k in gate.gate if k not in candidate)
    if missing:
        raise KeyError(f"the candidate has no value for gate metric(s) {missing}; promotion.gate names numeric "
                       "keys of metrics/<registry.model>.json")
    if champion is None:
        return Decision(True, "first model: no champion yet")
    worse = []
    for key, better in gate.gate.items():
        if key not in champion:
            continue  # the champion predates this gate metric: nothing to compare against
        margin = candidate[key] - champion[key] if better == "higher" else champion[key] - candidate[key]
        if margin < -gate.tolerance:
            worse.append(f"{key} {candidate[key]:.4g} vs champion {champion[key]:.4g} ({better} is better)")
    if worse:
        return Decision(False, "worse than the champion on " + "; ".join(worse))
    compared = ", ".join(f"{k} {candidate[k]:.4g}" for k in gate.gate)
    return Decision(True, f"not worse than the champion on any gate metric ({compared})")


def version_metrics(version, keys) -> dict[str, float]:
    """The evaluation metrics `keys` (names as in metrics/<model>.json) a version was registered with."""
    tags = {key: version.tags.get(f"metric.{metric_name(key)}") for key in keys}
    return {key: float(value) for key, value in tags.items() if value is not None}


def champion_version(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no champion yet


def promote(client: MlflowClient, name: str, version: int, gate: PromotionParams) -> Decision:
    """Run the gate for `version` of `name` and set the `champion` or `challenger` alias accordingly."""
    candidate = client.get_model_version(name, str(version))
    champion = champion_version(client, name)
    if champion is not None and int(champion.version) == int(version):
        return Decision(True, f"version {version} is already the champion (nothing new was registered)")
    decision = gate_decision(version_metrics(candidate, gate.gate),
                             version_metrics(champion, gate.gate) if champion is not None else None, gate)
    client.set_registered_model_alias(name, CHAMPION if decision.promoted else CHALLENGER, str(version))
    client.set_model_version_tag(name, str(version), "promotion",
                                 ("promoted: " if decision.promoted else "not promoted: ") + decision.reason)
    return decision


def main() -> None:
    params = load_params()
    with stage_run("register", params.registry, params.tracking.experiment) as run:
        entry = register(params, run)
    write_json(OUT, entry)
    print(f"registered {entry['name']} version {entry['version']} as '{entry['alias']}'")


if __name__ == "__main__":
    main()
