"""Stage `report`: one self-contained HTML page about the pipeline's latest results.

    python -m tasks.report      # -> reports/report.html (and report.json, the data behind it)

Sections: the stage ladder (every model in evaluate.models, each rate ± half its 95% interval), the paired deltas
of the recipe's rungs (metrics/ladder_deltas.json), pass@k / maj@k and best-of-N curves per model (test-time
scaling, metrics/tts_<model>.json), the reward and completion-length curves of each GRPO stage (from the stage's
latest finished MLflow run, else its plots/<stage>.csv), the rejection-sampling funnel, students vs teacher, R1-Zero
vs R1, and provenance (params.yaml, git commit, dvc.lock hashes, MLflow run ids).

The page renders with no network: inline CSS, charts as PNG images embedded as `data:` URIs, no scripts. A model or
stage that has not run is reported as such; the report is built from whatever the workspace holds.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from matplotlib.figure import Figure  # figures without pyplot: no display, no global backend state
from mlflow import MlflowClient

from tasks.blocks import params as params_module
from tasks.blocks.data import write_json
from tasks.blocks.dvc_files import lock_outs
from tasks.blocks.params import GRPO_STAGES, Params, TrackingParams
from tasks.blocks.stage import stage_main
from tasks.blocks.tracking import git_commit, redact, tracking_uri

REPORTS = Path("reports")
METRICS = Path("metrics")
MODELS = Path("models")
PLOTS = Path("plots")

SECTIONS = {"ladder": "Stage ladder", "deltas": "What each stage changed", "scaling": "Test-time scaling",
            "rl-curves": "RL curves", "rejection-sampling": "Rejection sampling", "students": "Students vs teacher",
            "r1-zero": "R1-Zero vs R1", "provenance": "Provenance"}
# (metrics key, column title, number format) of the ladder tables, as tasks/evaluate.py writes them.
LADDER_COLUMNS = (("pass@1", "pass@1", ".3f"), ("maj@k", "maj@k", ".3f"), ("greedy_accuracy", "greedy", ".3f"),
                  ("format_rate", "format", ".3f"), ("language_consistency", "language", ".3f"),
                  ("general_accuracy", "general tasks", ".3f"), ("refusal_rate", "refusals (harmful)", ".3f"),
                  ("needless_refusal_rate", "needless refusals", ".3f"), ("rm_score", "RM score", "+.3f"),
                  ("mean_completion_tokens", "tokens", ".1f"))
TEACHERS = ("resft", "alignment_rl")
STUDENT_PREFIX = "distill_"
# What the RL curves plot: the weighted reward, each reward function's mean, the mean completion length. TRL logs
# these names to MLflow and tasks/grpo.py writes them as CSV columns.
CURVE_KEY = re.compile(r"^(reward|rewards/[^/]+/mean|completions/mean_length)$")
LENGTH_KEY = "completions/mean_length"
ACCURACY_KEY = "rewards/accuracy_reward/mean"


# ---- gathering: files and MLflow -> plain data (also written as report.json) ----

def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def ladder_rows(models: list[str]) -> list[dict]:
    """One row per model: its metrics/<model>.json, or `evaluated: False` when the file is missing."""
    rows = []
    for model in models:
        metrics = read_json(METRICS / f"{model}.json")
        rows.append({"model": model, "evaluated": metrics is not None, **(metrics or {})})
    return rows


def store_exists(uri: str) -> bool:
    """A sqlite store that does not exist yet would be created by merely opening it: check first."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def latest_finished_runs(experiment: str) -> dict[str, mlflow.entities.Run]:
    """{stage tag: the latest FINISHED run of that stage} in the experiment; {} when there is none."""
    uri = tracking_uri()
    if not store_exists(uri):
        return {}
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    latest: dict[str, mlflow.entities.Run] = {}
    for run in runs:
        stage = run.data.tags.get("stage")
        if stage:
            latest.setdefault(stage, run)
    return latest


def stage_runs(experiment: str, models_dir: Path = MODELS) -> dict[str, mlflow.entities.Run]:
    """{stage: the MLflow run behind its outputs}. A stage that wrote a model gets the run its provenance.json
    records (none, if the store no longer has it finished): a later run of the stage, say a discarded experiment's,
    never stands for these outputs. Other stages get their latest finished run."""
    runs = latest_finished_runs(experiment)
    if not runs:
        return runs
    client = MlflowClient(tracking_uri())
    for file in sorted(models_dir.glob("*/provenance.json")):
        made_by = json.loads(file.read_text())
        if not made_by.get("mlflow_run_id"):
            continue  # written before provenance recorded the run
        runs.pop(made_by["stage"], None)
        try:
            run = client.get_run(made_by["mlflow_run_id"])
        except mlflow.exceptions.MlflowException:
            continue
        if run.info.status == "FINISHED":
            runs[run.data.tags.get("stage", made_by["stage"])] = run
    return runs


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def mlflow_curve(run: mlflow.entities.Run) -> dict[str, list[list[float]]]:
    client = MlflowClient(tracking_uri())
    series = {}
    for key in sorted(k for k in run.data.metrics if CURVE_KEY.match(k)):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        series[key] = [[m.step, m.value] for m in history if finite(m.value)]
    return series


def csv_curve(path: Path) -> dict[str, list[list[float]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        keys = [k for k in reader.fieldnames or [] if CURVE_KEY.match(k)]
    series = {}
    for key in keys:
        points = [[int(float(r["step"])), float(r[key])] for r in rows if r.get(key) not in (None, "")]
        series[key] = [p for p in points if finite(p[1])]
    return series


def rl_curve(stage: str, runs: dict, experiment: str) -> dict:
    """A GRPO stage's curves from the MLflow run that made its model, else from plots/<stage>.csv, else not run."""
    run = runs.get(stage)
    if run is not None:
        return {"stage": stage, "source": "mlflow", "run_id": run.info.run_id, "series": mlflow_curve(run),
                "note": f"MLflow run {run.info.run_id} (the run that made models/{stage})"}
    path = PLOTS / f"{stage}.csv"
    if path.exists():
        return {"stage": stage, "source": "csv", "run_id": None, "series": csv_curve(path),
                "note": f"{path} (no finished MLflow run tagged stage={stage} in experiment '{experiment}')"}
    return {"stage": stage, "source": None, "run_id": None, "series": {},
            "note": f"not run: no finished MLflow run tagged stage={stage} in experiment '{experiment}' "
                    f"and no {path}"}


def funnel(report: dict) -> list[dict]:
    """Samples -> what is left after each filter (in the order they are applied) -> kept + non-reasoning = final."""
    dropped = report["dropped_by_filter"]
    names = report.get("filter_order") or sorted(dropped)  # the order the stage applied them
    left = report["samples"]
    steps = [{"step": "samples", "dropped": 0, "left": left}]
    for name in names:
        left -= dropped[name]
        steps.append({"step": f"after {name}", "dropped": dropped[name], "left": left})
    steps.append({"step": "kept reasoning", "dropped": 0, "left": report["kept_reasoning"]})
    steps.append({"step": "+ non-reasoning", "dropped": 0, "left": report["non_reasoning"]})
    steps.append({"step": "final blend", "dropped": 0, "left": report["final_size"]})
    return steps


def git_state() -> dict:
    try:
        status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown", "dirty": None, "changes": []}
    changes = status.stdout.splitlines() if status.returncode == 0 else []
    return {"commit": git_commit(), "dirty": bool(changes) if status.returncode == 0 else None,
            "changes": changes}


def provenance(runs: dict, experiment: str) -> dict:
    outs = lock_outs()
    stages = list(outs) + sorted(set(runs) - set(outs))
    params_file = Path(params_module.PARAMS_FILE)
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "params_file": str(params_file),
        "params_yaml": params_file.read_text(encoding="utf-8") if params_file.exists() else "",
        "tracking_uri": redact(tracking_uri()), "experiment": experiment,
        "stages": [{"stage": s, "outs": outs.get(s, {}), "mlflow_run_id": runs[s].info.run_id if s in runs else None}
                   for s in stages],
    }


def build(params: Params) -> dict:
    """Everything the report shows, as plain data (no images): what report.json holds."""
    experiment = params.tracking.experiment
    models = params.evaluate.models
    try:
        runs = stage_runs(experiment)
        mlflow_error = None
    except Exception as exc:  # an unreachable or broken store must not hide the rest: fall back to the CSV curves
        runs, mlflow_error = {}, f"{type(exc).__name__}: {exc}"
        print(f"report: MLflow store unavailable ({mlflow_error}); using plots/*.csv", file=sys.stderr)
    students = [m for m in models if m.startswith(STUDENT_PREFIX)] + [m for m in models if m == "student_rl"]
    return {
        "evaluate_data": params.evaluate.data,
        "ladder": ladder_rows(params.evaluate.names),
        "deltas": (read_json(METRICS / "ladder_deltas.json") or {}).get("deltas"),
        "scaling": {m: read_json(METRICS / f"tts_{m}.json") for m in params.evaluate.names},
        "curves": {stage: rl_curve(stage, runs, experiment) for stage in GRPO_STAGES},
        "mlflow_error": mlflow_error,
        "rejection_sampling": read_json(METRICS / "rejection_sampling.json"),
        "teachers": ladder_rows([m for m in TEACHERS if m in models]),
        "students": ladder_rows(students),
        "r1_zero": ladder_rows([m for m, spec in params.evaluate.prompted.items() if spec.template_of == "r1_zero"]
                               + ["r1_zero", "reasoning_rl"]),
        "provenance": provenance(runs, experiment),
    }


# ---- charts: matplotlib figures -> PNG data: URIs ----

def figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, columns, squeeze=False)[0]
    return fig, list(axes)


def png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def bar_chart(rows: list[dict], keys: tuple[str, ...], title: str) -> str | None:
    """Grouped horizontal bars: one group per evaluated model, one bar per metric key."""
    rows = [r for r in rows if r["evaluated"]]
    if not rows:
        return None
    fig, [ax] = figure(8, 0.5 + 0.35 * len(rows) * len(keys))
    height = 0.8 / len(keys)
    for i, key in enumerate(keys):
        positions = [n + i * height for n in range(len(rows))]
        values = [r.get(key, 0.0) for r in rows]
        errors = [[v - r.get(f"{key}_ci95", [v, v])[0] for v, r in zip(values, rows)],
                  [r.get(f"{key}_ci95", [v, v])[1] - v for v, r in zip(values, rows)]]
        ax.barh(positions, values, height=height, label=key, xerr=errors, capsize=2)
    ax.set_yticks([n + height * (len(keys) - 1) / 2 for n in range(len(rows))], [r["model"] for r in rows])
    ax.invert_yaxis()  # first model on top, as in the table
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower right")
    return png_uri(fig)


def curve_chart(series: dict[str, list], title: str) -> str:
    """Rewards on the left, completion length on the right, both over training steps."""
    fig, [rewards_ax, length_ax] = figure(11, 3.6, columns=2)
    for key, points in series.items():
        if key != LENGTH_KEY and points:
            rewards_ax.plot(*zip(*points), marker=".", label=key.removeprefix("rewards/").removesuffix("/mean"))
    rewards_ax.set(title=f"{title}: rewards", xlabel="step")
    rewards_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)  # below: no overlap
    if series.get(LENGTH_KEY):
        length_ax.plot(*zip(*series[LENGTH_KEY]), marker=".", color="tab:purple")
    length_ax.set(title=f"{title}: mean completion length", xlabel="step", ylabel="tokens")
    return png_uri(fig)


def comparison_chart(curves: list[dict]) -> str:
    """Accuracy reward and completion length of several stages on the same axes."""
    fig, [accuracy_ax, length_ax] = figure(11, 3.6, columns=2)
    for curve in curves:
        for ax, key in ((accuracy_ax, ACCURACY_KEY), (length_ax, LENGTH_KEY)):
            if curve["series"].get(key):
                ax.plot(*zip(*curve["series"][key]), marker=".", label=curve["stage"])
    accuracy_ax.set(title="accuracy reward", xlabel="step")
    length_ax.set(title="mean completion length", xlabel="step", ylabel="tokens")
    for ax in (accuracy_ax, length_ax):
        ax.legend(fontsize=8)
    return png_uri(fig)


def scaling_chart(tts: dict) -> str:
    """Accuracy against the number of samples N for each selector, with 95% intervals as bands."""
    fig, [ax] = figure(5.5, 3.2)
    labels = {"verifier": "verifier (pass@N)", "majority_vote": "majority vote (maj@N)",
              "reward_model": "reward model (best-of-N)"}
    for key, label in labels.items():
        if key in tts:
            ax.plot(tts["N"], tts[key], marker="o", label=label)
            ax.fill_between(tts["N"], *zip(*tts[f"{key}_ci95"]), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(tts["N"], [str(n) for n in tts["N"]])
    ax.set(title=f"{tts['model']}: accuracy vs samples", xlabel="N samples", ylabel="accuracy", ylim=(0, 1))
    ax.legend(fontsize=8)
    return png_uri(fig)


def funnel_chart(steps: list[dict]) -> str:
    fig, [ax] = figure(8, 0.4 + 0.35 * len(steps))
    ax.barh([s["step"] for s in steps], [s["left"] for s in steps], color="tab:green")
    for n, s in enumerate(steps):
        ax.text(s["left"], n, f" {s['left']:,}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(title="rejection-sampling funnel", xlabel="samples")
    return png_uri(fig)


def histogram_chart(histogram: dict[str, int]) -> str:
    fig, [ax] = figure(6, 3)
    ax.bar(list(histogram), list(histogram.values()), color="tab:blue")
    ax.set(title="prompts by number of correct samples", xlabel="correct samples / k", ylabel="prompts")
    return png_uri(fig)


# ---- HTML ----

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; } .muted { color: #666; } .missing { color: #a33; }
.grid { display: flex; flex-wrap: wrap; gap: 0.5em; } .grid img { max-width: 49%; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f3f3f3; }
code { font-size: 12px; } td code { display: block; text-align: left; white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller); the last cell of a short row spans the columns left."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row[:-1])
                   + f'<td colspan="{len(headers) - len(row) + 1}">{row[-1]}</td></tr>' for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">' if uri else ""


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def ladder_table(rows: list[dict]) -> str:
    cells = []
    for row in rows:
        if not row["evaluated"]:
            cells.append([esc(row["model"]), f'<span class="missing">not evaluated: no metrics/{esc(row["model"])}'
                                             f'.json (run evaluate@{esc(row["model"])})</span>'])
            continue
        cells.append([esc(row["model"]), esc(row.get("n", "–"))] + [plus_minus(row, key, fmt)
                                                                   for key, _, fmt in LADDER_COLUMNS])
    return table(["model", "n"] + [title for _, title, _ in LADDER_COLUMNS], cells)


def plus_minus(row: dict, key: str, fmt: str) -> str:
    """The value ± half its 95% interval (the interval itself on hover)."""
    value = row.get(key)
    if not isinstance(value, (int, float)):
        return "–"
    ci = row.get(f"{key}_ci95")
    if not ci:
        return format(value, fmt)
    return (f'<span title="95% interval [{ci[0]:{fmt}}, {ci[1]:{fmt}}]">{value:{fmt}} '
            f'<span class="muted">± {(ci[1] - ci[0]) / 2:{fmt.lstrip("+")}}</span></span>')


def deltas_section(data: dict) -> str:
    deltas = data["deltas"]
    if not deltas:
        return missing("no metrics/ladder_deltas.json (run the ladder stage)")
    intro = ("<p>Each step of the recipe against the model it starts from, on the same held-out problems: the change "
             "of each metric with its paired 95% bootstrap interval (problems resampled, the same ones for both "
             "models). <b>Bold</b>: the interval excludes 0, a change larger than the noise; the others are inside "
             "the noise.</p>")
    rows = []
    for d in deltas:
        delta = f"{d['delta']:+.3f}"
        rows.append([esc(d["from"]), esc(d["to"]), esc(d["metric"]),
                     f"<b>{delta}</b>" if d["excludes_zero"] else delta,
                     f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]", esc(d["n"])])
    return intro + table(["from", "to", "metric", "change", "95% interval", "problems"], rows)


def scaling_section(data: dict) -> str:
    intro = ("<p>Per model: accuracy when N of its samples are drawn and one answer is chosen, for N = 1, 2, 4, ..., "
             "by the verifier (correct when any sample is: the pass@N ceiling, unbiased estimator), by majority vote "
             "(self-consistency, maj@N) and by the trained reward model (the sample it scores highest). Bands: 95% "
             "bootstrap intervals over problems.</p>")
    charts = [image(scaling_chart(tts), f"{model} test-time scaling") if tts else
              missing(f"{model}: no metrics/tts_{model}.json (run evaluate@{model})")
              for model, tts in data["scaling"].items()]
    return intro + '<div class="grid">' + "".join(charts) + "</div>"



def ladder_section(data: dict) -> str:
    rows = data["ladder"]
    k = next((r["k"] for r in rows if "k" in r), None)
    intro = (f"Every model in <code>evaluate.models</code> on the held-out split <code>{esc(data['evaluate_data'])}"
             f"</code>: pass@1 over k{f' = {k}' if k else ''} samples (T 0.6, top-p 0.95), maj@k, greedy accuracy, "
             "format and language consistency over the samples; general tasks, refusals and reward-model score on "
             "held-out general prompts (greedy). Each value ± half its 95% bootstrap interval over problems; n: "
             "problems. – means the metric was not measured.")
    chart = bar_chart(rows, ("pass@1", "maj@k"), "pass@1 and maj@k per model")
    return f"<p>{intro}</p>{ladder_table(rows)}{image(chart, 'pass@1 and maj@k per model')}"


def curve_block(curve: dict) -> str:
    heading = f"<h3>{esc(curve['stage'])}</h3>"
    if curve["source"] is None:
        return heading + missing(curve["note"])
    source = f'<p class="muted">source: {esc(curve["note"])}</p>'
    if not curve["series"]:
        return heading + source + missing("no reward or completion-length values were logged")
    return heading + source + image(curve_chart(curve["series"], curve["stage"]), f"{curve['stage']} curves")


def curves_section(data: dict) -> str:
    intro = ("<p>Per GRPO stage: the weighted reward and each reward function's mean, and the mean completion length, "
             "per logged training step.</p>")
    error = missing(f"MLflow store unavailable: {data['mlflow_error']}") if data["mlflow_error"] else ""
    return intro + error + "".join(curve_block(c) for c in data["curves"].values())


def rejection_section(data: dict) -> str:
    report = data["rejection_sampling"]
    if report is None:
        return missing("not run: no metrics/rejection_sampling.json (run the rejection_sampling stage)")
    steps = funnel(report)
    intro = (f"<p>{report['samples']:,} samples ({report['samples_per_prompt']} per prompt for {report['prompts']:,} "
             f"prompts), pass rate {report['pass_rate']:.3f}; {report['prompts_with_a_kept_sample']:,} prompts kept at "
             f"least one sample. The blend is {report['kept_reasoning']:,} reasoning + {report['non_reasoning']:,} "
             f"non-reasoning rows ({report['non_reasoning_share']:.0%}) = {report['final_size']:,}.</p>")
    rows = [[esc(s["step"]), f"{s['dropped']:,}" if s["dropped"] else "", f"{s['left']:,}"] for s in steps]
    return (intro + table(["step", "dropped", "left"], rows) + image(funnel_chart(steps), "rejection-sampling funnel")
            + image(histogram_chart(report["pass_rate_histogram"]), "pass-rate histogram"))


def students_section(data: dict) -> str:
    if not data["students"]:
        return missing(f"No student model in evaluate.models (models named {STUDENT_PREFIX}<student>, or "
                       "student_rl): run the distillation stages and evaluate the students to compare them here.")
    rows = data["teachers"] + data["students"]
    intro = (f"<p>Teachers ({esc(', '.join(r['model'] for r in data['teachers']) or 'none evaluated')}) beside the "
             "students distilled from them on the same held-out split.</p>")
    chart = bar_chart(rows, ("pass@1", "maj@k", "greedy_accuracy"), "students vs teacher")
    return intro + ladder_table(rows) + image(chart, "students vs teacher")


def r1_zero_section(data: dict) -> str:
    zero = data["curves"]["r1_zero"]
    if zero["source"] is None and not data["r1_zero"][0]["evaluated"]:
        return missing("R1-Zero not run: no metrics/r1_zero.json and no r1_zero curve (run the r1_zero stage and "
                       "evaluate@r1_zero).")
    intro = ("<p>R1-Zero (GRPO straight from the base model, no cold start) against R1's reasoning RL (GRPO after the "
             "cold-start SFT).</p>")
    curves = [c for c in (zero, data["curves"]["reasoning_rl"]) if c["source"] is not None]
    sources = "".join(f'<p class="muted">{esc(c["stage"])}: {esc(c["note"])}</p>' for c in data["curves"].values()
                      if c["stage"] in ("r1_zero", "reasoning_rl"))
    return (intro + ladder_table(data["r1_zero"]) + sources
            + image(comparison_chart(curves) if curves else None, "R1-Zero vs reasoning RL curves"))


def provenance_section(data: dict) -> str:
    p = data["provenance"]
    git = p["git"]
    dirty = {True: "yes (uncommitted changes below)", False: "no", None: "unknown"}[git["dirty"]]
    changes = f"<pre>{esc(chr(10).join(git['changes']))}</pre>" if git["changes"] else ""
    rows = [[esc(s["stage"]), f"<code>{esc(s['mlflow_run_id'] or '–')}</code>",
             "".join(f"<code>{esc(path)}: {esc(md5)}</code>" for path, md5 in s["outs"].items()) or "–"]
            for s in p["stages"]]
    stages = table(["stage", "MLflow run (latest finished)", "outs in dvc.lock (md5)"], rows)
    return (f"<p>Generated {esc(p['generated_at'])}; git commit <code>{esc(git['commit'])}</code>, dirty: {dirty}; "
            f"MLflow store <code>{esc(p['tracking_uri'])}</code>, experiment <code>{esc(p['experiment'])}</code>. "
            "The git commit is the one at generation time; the dvc.lock hashes are those of the last "
            "<code>dvc repro</code>.</p>" + changes + stages
            + f"<h3>{esc(p['params_file'])}</h3><pre>{esc(p['params_yaml'])}</pre>")


RENDERERS = {"ladder": ladder_section, "deltas": deltas_section, "scaling": scaling_section,
             "rl-curves": curves_section, "rejection-sampling": rejection_section, "students": students_section,
             "r1-zero": r1_zero_section, "provenance": provenance_section}


def render(data: dict) -> str:
    nav = " ".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title in SECTIONS.items())
    sections = "\n".join(f'<section id="{anchor}"><h2>{esc(title)}</h2>{RENDERERS[anchor](data)}</section>'
                         for anchor, title in SECTIONS.items())
    commit = data["provenance"]["git"]["commit"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>r1-pipeline run report</title>'
            f"<style>{CSS}</style></head><body><h1>r1-pipeline run report</h1>"
            f'<p class="muted">generated {esc(data["provenance"]["generated_at"])} at commit {esc(commit[:12])}</p>'
            f"<nav>{nav}</nav>\n{sections}\n</body></html>\n")


def run(stage: str, p: TrackingParams, params: Params, out: Path = REPORTS) -> dict:
    data = build(params)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(render(data), encoding="utf-8")
    write_json(out / "report.json", data)
    return data


def main() -> None:
    # The MLflow UI shows the report beside the runs it summarizes.
    stage_main(("report",), run, __doc__.splitlines()[0], out=str(REPORTS), section="tracking",
               artifacts=[str(REPORTS / "report.html")])
    print(f"wrote {REPORTS / 'report.html'}")


if __name__ == "__main__":
    main()
