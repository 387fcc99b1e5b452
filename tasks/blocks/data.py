"""JSON Lines in and out: every data file between stages goes through here.

Reading validates as it goes, so a broken file fails with its name and line number before any training starts.
Writing is atomic (temp file + rename): a killed stage never leaves half a file behind as if it were finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class DataError(ValueError):
    """A data file is malformed; the message names the file and the line."""


def read_jsonl(path: Path | str, required: Iterable[str] = ("id",), limit: int | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    rows: list[dict] = []
    seen_ids: dict[str, int] = {}
    required = tuple(required)
    for number, row in _json_lines(path):
        missing = [key for key in required if key not in row]
        if missing:
            raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        if "id" in row:
            if row["id"] in seen_ids:
                first = seen_ids[row["id"]]
                raise DataError(f"{path}:{number}: duplicate id {row['id']!r} (first on line {first})")
            seen_ids[row["id"]] = number
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path}: empty file (no rows)")
    return rows


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; a line that is not UTF-8 JSON of an object fails naming it."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # else a row cut short fails at column 1 of the next line
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: broken JSON line ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def check_input_files(paths: Iterable[Path | str]) -> None:
    """Fail naming the first file that is cut short or corrupted (a half-written JSON Lines or JSON file, a truncated
    safetensors file) among `paths` and the files of the directories among them: a stage checks its inputs before
    any work. Only the files' syntax is checked (what each stage needs of the rows is its own check); missing paths
    are left to the stage, which names them."""
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] if path.exists() else []
        for file in files:
            if file.suffix == ".jsonl":
                for _ in _json_lines(file):
                    pass
            elif file.suffix == ".json":
                try:
                    json.loads(file.read_bytes())
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DataError(f"{file}: broken JSON file ({exc}); re-run the stage that writes it") from None
            elif file.suffix == ".safetensors":
                _check_safetensors(file)


def _check_safetensors(file: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy"):
            pass
    except SafetensorError as exc:  # the header names more bytes than the file has, or is itself cut short
        raise DataError(f"{file}: truncated or corrupted safetensors file ({exc}); re-run the stage that writes "
                        "it") from None


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> int:
    """Write rows atomically; the same rows always give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_json(path: Path | str, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_fingerprint(params, *paths: Path | str) -> str:
    """Identifies a piece of work's inputs: the whole params (a stage also reads seed, runtime, prompt, ... beside its
    own section) plus the size and mtime of every input file."""
    h = hashlib.sha256(params.model_dump_json().encode())
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            stat = f.stat()
            h.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def keep_if_same_inputs(directory: Path, fingerprint: str) -> None:
    """Make `directory` hold only work done for these inputs: partial work (checkpoints, sample shards) of other
    inputs is deleted, so a resumed stage never mixes in results of older params or upstream models."""
    stamp = directory / "inputs.fingerprint"
    if directory.is_dir() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def mix_in(pool: list[dict], others: int, ratio: float, rng: random.Random) -> list[dict]:
    """Rows of `pool` making up `ratio` of a mix with `others` rows: sampled without replacement, the pool repeated
    (upsampled) when it is smaller than its share, repeats given ids of their own (`<id>-r<n>`)."""
    wanted = round(others * ratio / (1 - ratio))
    chosen: list[dict] = []
    for repeat in range(math.ceil(wanted / len(pool)) if pool else 0):
        picked = rng.sample(pool, min(wanted - len(chosen), len(pool)))
        chosen += [{**row, "id": f"{row['id']}-r{repeat}"} if repeat else row for row in picked]
    return chosen
