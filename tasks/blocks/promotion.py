"""The promotion gate of the scheduled-retrain flow: does the newly registered model become `champion`?

The `register` stage makes each new final model a version of `registry.name` with its evaluation metrics as tags and
the alias `candidate`. `promote` then compares that version with the current `champion` on the gate metrics
(params `promotion`): it becomes `champion` when there is no champion yet, or when none of the gate metrics is worse
than the champion's by more than `promotion.tolerance`; otherwise it becomes `challenger`, and the version is tagged
`promotion` with the reason either way. `gate_decision` is the rule alone, without MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.blocks.params import PromotionParams
from tasks.blocks.tracking import metric_name

REGISTRY_FILE = Path("metrics/registry.json")  # the register stage's record of the version it made
CHAMPION, CHALLENGER = "champion", "challenger"


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
    compared = ", ".join(f"{k} {candidate[k]:.4g} vs {champion[k]:.4g}" for k in gate.gate if k in champion)
    return Decision(True, f"not worse than the champion on any gate metric ({compared})")


def version_metrics(version: ModelVersion, keys) -> dict[str, float]:
    """The evaluation metrics `keys` (names as in metrics/<model>.json) that a version was registered with."""
    tags = {key: version.tags.get(f"metric.{metric_name(key)}") for key in keys}
    return {key: float(value) for key, value in tags.items() if value is not None}


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no champion yet


def promote(client: MlflowClient, name: str, version: int, gate: PromotionParams) -> Decision:
    """Run the gate for `version` of registered model `name`; set its `champion` or `challenger` alias."""
    candidate = client.get_model_version(name, str(version))
    champion = champion_version(client, name)
    if champion is not None and int(champion.version) == int(version):
        return Decision(True, f"version {version} is already the champion (nothing new was registered)")
    decision = gate_decision(version_metrics(candidate, gate.gate),
                             version_metrics(champion, gate.gate) if champion is not None else None, gate)
    client.set_registered_model_alias(name, CHAMPION if decision.promoted else CHALLENGER, str(version))
    client.set_model_version_tag(name, str(version), "promotion",
                                 f"{'promoted' if decision.promoted else 'not promoted'}: {decision.reason}")
    return decision
