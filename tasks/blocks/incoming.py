"""The drop folder: new prompts and preference rows for the next retrain.

    python -m tasks.blocks.incoming        # what the scheduled-retrain flow does before `dvc repro`

Drop JSON Lines files into data/incoming/ (fields in data/README.md): `prompts*.jsonl` (reasoning prompts with a
gold answer, for RL and rejection sampling) or `preferences*.jsonl` (preference pairs for the reward model). Each file
is validated as a whole: a good one is appended to data/extra/<kind>.jsonl (git-tracked, a dependency of the
`prepare_data` stage, so DVC sees the change and re-runs what depends on it) and moved to data/incoming/processed/;
a bad one is moved to data/incoming/quarantine/ with a `<name>.reason.txt` naming the line and the problem, and the
other files go on.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from tasks.blocks.data import DataError, read_jsonl, write_jsonl

INCOMING = Path("data/incoming")
EXTRA = Path("data/extra")
ID_PREFIX = "incoming:"  # accepted ids are namespaced: they can never collide with the toy world's
ROLES = {"system", "user", "assistant"}
PREFERENCE_KINDS = {"helpfulness", "harmlessness"}


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _messages(value, what: str, last_role: str) -> list[dict]:
    """A chat (list of {role, content}) or a plain string, which becomes one message of `last_role`."""
    if isinstance(value, str):
        return [{"role": last_role, "content": _text(value, what)}]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a string or a non-empty list of {{role, content}} messages")
    for message in value:
        if not isinstance(message, dict) or set(message) != {"role", "content"} or message["role"] not in ROLES:
            raise ValueError(f"{what}: every message is {{role, content}} with role in {sorted(ROLES)}")
        _text(message["content"], f"{what} content")
    if value[-1]["role"] != last_role:
        raise ValueError(f"{what} must end with a {last_role} message")
    return value


def prompt_row(row: dict) -> dict:
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise ValueError("answer must be a non-empty string or a number")
    return {"id": f"{ID_PREFIX}{row['id']}", "source": row.get("source", "incoming"),
            "prompt": _messages(row["prompt"], "prompt", "user"), "answer": str(answer)}


def preference_row(row: dict) -> dict:
    if row.get("kind") not in PREFERENCE_KINDS:
        raise ValueError(f"kind must be one of {sorted(PREFERENCE_KINDS)}")
    return {"id": f"{ID_PREFIX}{row['id']}", "source": row.get("source", "incoming"), "kind": row["kind"],
            "flaw": row.get("flaw", "unspecified"), "prompt": _messages(row["prompt"], "prompt", "user"),
            "chosen": _messages(row["chosen"], "chosen", "assistant"),
            "rejected": _messages(row["rejected"], "rejected", "assistant")}


# file-name prefix -> (the fields every row needs, the row validator)
KINDS: dict[str, tuple[tuple[str, ...], Callable[[dict], dict]]] = {
    "prompts": (("id", "prompt", "answer"), prompt_row),
    "preferences": (("id", "kind", "prompt", "chosen", "rejected"), preference_row),
}


def file_kind(path: Path) -> str:
    for kind in KINDS:
        if path.name.startswith(kind):
            return kind
    raise DataError(f"{path}: unknown file kind: name it {' or '.join(f'{k}*.jsonl' for k in KINDS)}")


def accepted_rows(kind: str, extra: Path = EXTRA) -> list[dict]:
    """The rows accepted so far (what prepare_data appends to the toy world's files)."""
    path = extra / f"{kind}.jsonl"
    return read_jsonl(path) if path.exists() and path.stat().st_size else []


def validate_file(path: Path, kind: str, known_ids: set[str]) -> list[dict]:
    required, check = KINDS[kind]
    rows = []
    for number, row in enumerate(read_jsonl(path, required=required), start=1):
        try:
            rows.append(check(row))
        except ValueError as exc:
            raise DataError(f"{path}: row {number} (id {row['id']!r}): {exc}") from None
        if rows[-1]["id"] in known_ids:
            raise DataError(f"{path}: row {number}: id {row['id']!r} was already accepted")
        known_ids.add(rows[-1]["id"])
    return rows


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(shutil.move(path, folder / f"{stamp}-{path.name}"))


def ingest(incoming: Path = INCOMING, extra: Path = EXTRA) -> dict:
    """Validate every file in the drop folder; append the good ones, quarantine the bad ones. Returns a report."""
    report: dict = {"accepted": {}, "quarantined": {}, "rows": {kind: 0 for kind in KINDS}}
    files = sorted(p for p in incoming.glob("*.jsonl") if p.is_file()) if incoming.is_dir() else []
    accepted = {kind: accepted_rows(kind, extra) for kind in KINDS}
    for path in files:
        try:
            kind = file_kind(path)
            known = {row["id"] for row in accepted[kind]}
            rows = validate_file(path, kind, known)
        except DataError as exc:
            moved = _move(path, incoming / "quarantine")
            moved.with_name(moved.name + ".reason.txt").write_text(f"{exc}\n", encoding="utf-8")
            report["quarantined"][path.name] = str(exc)
            continue
        accepted[kind] += rows
        # Appending rewrites the whole file atomically: a killed intake never leaves half a row behind.
        write_jsonl(extra / f"{kind}.jsonl", accepted[kind])
        _move(path, incoming / "processed")
        report["accepted"][path.name] = len(rows)
        report["rows"][kind] += len(rows)
    return report


def main() -> None:
    report = ingest()
    for name, count in report["accepted"].items():
        print(f"accepted {name}: {count} rows")
    for name, reason in report["quarantined"].items():
        print(f"quarantined {name}: {reason}")
    if not report["accepted"] and not report["quarantined"]:
        print(f"{INCOMING}: no new files")


if __name__ == "__main__":
    main()
