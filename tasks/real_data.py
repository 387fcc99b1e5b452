"""Stage `real_data@<name>`: a public math data set, checked against its SHA-256, in this project's data contract.

    python -m tasks.real_data stage gsm8k_train   # one entry of real_data.sources (what dvc.yaml's foreach runs)

Each entry of `real_data.sources` (empty in the toy params.yaml, filled by recipes/) names a JSON Lines file, its
format and its expected SHA-256. The stage fails with one message when the file is missing or its hash differs,
then writes data/real/<name>/:
    problems.jsonl    reasoning prompts (id, source, prompt, answer, solution): RL, rejection sampling, evaluation
    cold_start.jsonl  the worked solutions in the R1 format (id, source, prompt, completion, answer): cold-start SFT
    source.json       where the rows came from: path, SHA-256, format, row count

Formats (fields of the source rows):
    gsm8k  question, answer (worked solution with calculator notes <<48/2=24>>, last line `#### N`)
    math   problem, solution (final answer in \\boxed{}), answer (LaTeX; if absent, the solution's last \\boxed{})

With network, `python -m tasks.real_data download <dataset id> ...` writes a hub data set (datasets.load_dataset)
as such a file and prints its SHA-256, to put in a recipe's `real_data.sources`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tasks.blocks.data import DataError, read_jsonl, sha256, write_json, write_jsonl
from tasks.blocks.params import Params, RealSource, load_params
from tasks.blocks.rewards import extract_boxed
from tasks.blocks.stage import run_stage
from tasks.blocks.toy_world import r1_completion

OUT = Path("data/real")
FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "48/2=<<48/2=24>>24"


def check_source(path: Path | str, expected: str) -> Path:
    """The source file, after checking it exists and has the expected SHA-256 (DataError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: source file not found (see ../shared/data/README.md, or fetch it with "
                        "`python -m tasks.real_data download`)")
    actual = sha256(path)
    if actual != expected:
        raise DataError(f"{path}: SHA-256 is {actual}, expected {expected}: the file differs from the one the "
                        "params name")
    return path


def gsm8k_solution(text: str) -> tuple[str, str]:
    """(reasoning, gold answer) of a GSM8K worked solution: the gold after `####`, commas stripped."""
    reasoning, sep, gold = text.rpartition("####")
    gold = gold.strip().replace(",", "")
    if not sep or not gold:
        raise ValueError("no `#### N` final answer")
    return _CALCULATOR.sub("", reasoning).strip(), gold


def math_answer(row: dict) -> str:
    """MATH's gold answer: the `answer` field (MATH-500), else the last \\boxed{} of the solution (MATH train)."""
    if row.get("answer"):
        return str(row["answer"]).strip()
    boxes = extract_boxed(row["solution"])
    if not boxes:
        raise ValueError("no `answer` field and no \\boxed{} answer in the solution")
    return boxes[-1].strip()


def problem_rows(raw: list[dict], fmt: str, name: str) -> list[dict]:
    """Source rows -> reasoning rows of the data contract (data/README.md)."""
    rows = []
    for i, row in enumerate(raw):
        try:
            if fmt == "gsm8k":
                question, (solution, answer) = row["question"], gsm8k_solution(row["answer"])
            else:
                question, solution, answer = row["problem"], row["solution"], math_answer(row)
        except ValueError as exc:
            raise DataError(f"{name}: row {i + 1}: {exc}") from None
        rows.append({"id": f"{name}-{i:05d}", "source": name,
                     "prompt": [{"role": "user", "content": question.strip()}],
                     "answer": answer, "solution": solution.strip()})
    return rows


def cold_start_rows(problems: list[dict]) -> list[dict]:
    """The worked solutions as R1-format completions: the solution as reasoning, then the boxed answer."""
    return [{"id": f"{row['id']}-cold", "source": row["source"], "prompt": row["prompt"],
             "completion": [{"role": "assistant", "content": r1_completion(row["solution"], row["answer"])}],
             "answer": row["answer"]} for row in problems]


def load_source(source: RealSource, name: str) -> list[dict]:
    """The reasoning rows of a checked source file."""
    path = check_source(source.path, source.sha256)
    return problem_rows(read_jsonl(path, required=FIELDS[source.format]), source.format, name)


def run(stage: str, source: RealSource, params: Params, out: Path) -> dict:
    """One entry `stage` of real_data.sources into `out` (data/real/<stage>)."""
    problems = load_source(source, stage)
    directory = out
    counts = {"problems": write_jsonl(directory / "problems.jsonl", problems),
              "cold_start": write_jsonl(directory / "cold_start.jsonl", cold_start_rows(problems))}
    write_json(directory / "source.json", {"path": source.path, "sha256": source.sha256, "format": source.format,
                                           "rows": counts["problems"]})
    return {f"rows_{key}": n for key, n in counts.items()}


def download(dataset: str, split: str, to: Path, config: str | None = None, revision: str | None = None) -> str:
    """A hub data set written as a source file (its own fields, one row per line); returns its SHA-256."""
    from datasets import load_dataset

    rows = load_dataset(dataset, config, split=split, revision=revision)
    write_jsonl(to, (dict(row) for row in rows))
    return sha256(to)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stage", help="bring one entry of real_data.sources into data/real/<name>").add_argument(
        "name")
    fetch = commands.add_parser("download", help="write a Hugging Face hub data set as a source file (network)")
    fetch.add_argument("dataset", help="e.g. openai/gsm8k (config main) or HuggingFaceH4/MATH-500")
    fetch.add_argument("--config")
    fetch.add_argument("--split", required=True)
    fetch.add_argument("--revision", help="a commit of the data set repository, for a reproducible file")
    fetch.add_argument("--to", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "download":
        print(f"{download(args.dataset, args.split, args.to, args.config, args.revision)}  {args.to}")
        return
    params = load_params()
    sources = params.real_data.sources
    if args.name not in sources:
        parser.error(f"unknown source '{args.name}'; real_data.sources has {sorted(sources)}")
    run_stage(f"real_data@{args.name}", args.name, sources[args.name], params, run, OUT / args.name,
              tags={"source_sha256": sources[args.name].sha256})


if __name__ == "__main__":
    main()
