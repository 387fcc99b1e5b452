"""Register and serve the project's deployments against a Prefect server (`make serve`).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve

Run it from the workspace (the repository root): served flow runs execute as subprocesses of this process, in this
directory. Deployments:
- `r1-pipeline/r1-pipeline`: the recipe, from the UI with parameters (stages, params overrides, a recipe); its run
  form offers the real stage names (those of params.yaml's DAG and of each recipe's) and recipe names as choices;
- `scheduled-retrain/scheduled-retrain`: drop-folder intake, retrain, promotion gate; on the cron schedule of
  `orchestration.retrain_cron` (in `orchestration.retrain_timezone`).
Each deployment runs one flow run at a time (a deployment concurrency limit: a second run waits in
AwaitingConcurrencySlot, then runs); runs of different deployments also wait for each other on the workspace lock.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import RECIPES_DIR, pipeline, stage_order
from flows.retrain import scheduled_retrain
from tasks.blocks.params import dump_params, load_params

TAGS = ["r1-pipeline"]


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def stage_names() -> list[str]:
    """Every stage a run can select: params.yaml's DAG in order, then what only a recipe's DAG has (its real_data@<name>
    stages, its students and their evaluations), each recipe's read by DVC as the flow would write it."""
    names = stage_order()
    for recipe in recipe_names():
        with tempfile.TemporaryDirectory(prefix="r1-recipe-dag-") as tmp:
            shutil.copy("dvc.yaml", Path(tmp) / "dvc.yaml")
            (Path(tmp) / "params.yaml").write_text(dump_params(load_params(RECIPES_DIR / f"{recipe}.yaml")))
            (Path(tmp) / ".dvc").mkdir()  # a DVC repository to read, outside git (as `dvc init --no-scm` makes)
            (Path(tmp) / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
            names += [name for name in (n.rsplit(":", 1)[-1] for n in stage_order(tmp)) if name not in names]
    return names


def offer_choices(deployment, **choices: list[str]) -> None:
    """Make the deployment's run form offer these names for these parameters, a select instead of free text: an
    `enum` on the string (or the array's items) in each parameter's schema. The server then also refuses a run whose
    parameters name anything else. The default (None) is left out of the schema, so the form opens on the select, not
    on "None"; a run that picks nothing still gets the flow's default (every stage, params.yaml)."""
    properties = deployment._parameter_openapi_schema.properties  # Prefect builds it from the flow's signature
    for parameter, names in choices.items():
        for variant in properties[parameter].get("anyOf", [properties[parameter]]):
            target = variant["items"] if variant.get("type") == "array" else variant
            if target.get("type") == "string":
                target["enum"] = names
        properties[parameter].pop("default", None)


def deployments(schedule: bool = True) -> list:
    params = load_params()  # a bad params.yaml (a bad cron included) stops here
    cron = Cron(params.orchestration.retrain_cron, timezone=params.orchestration.retrain_timezone)
    recipe = pipeline.to_deployment(name="r1-pipeline", tags=TAGS, concurrency_limit=1, description=pipeline.__doc__)
    offer_choices(recipe, stages=stage_names(), recipe=recipe_names())
    return [
        recipe,
        scheduled_retrain.to_deployment(name="scheduled-retrain", tags=TAGS, concurrency_limit=1,
                                        schedules=[cron] if schedule else None,
                                        description=scheduled_retrain.__doc__),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-schedule", action="store_true", help="serve scheduled-retrain without its schedule")
    args = parser.parse_args()
    serve(*deployments(schedule=not args.no_schedule))


if __name__ == "__main__":
    main()
