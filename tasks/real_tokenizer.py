"""A real Qwen2.5 tokenizer and a tiny random Qwen2.5-shaped model built from it, with no model hub.

    python -m tasks.real_tokenizer fetch             # `make real-tokenizer` (part of `make test`): fetch and check
    python -m tasks.real_tokenizer tiny-model DIR    # a tiny random Qwen2ForCausalLM with the Qwen2.5 tokenizer

Source: the `llama-cpp-python` source distribution on PyPI (0.3.36, MIT) vendors llama.cpp, whose
`models/ggml-vocab-qwen2.gguf` holds Qwen2's byte-level BPE vocabulary and merges (no weights), with llama.cpp's
tokenizer test vectors (`.inp` / `.out`, made with the original Hugging Face tokenizer). `fetch` downloads the sdist
with pip (pinned by its SHA-256, which pip checks before it runs anything from it), extracts only those files into
`.cache/real/` (`R1_REAL_CACHE` overrides) and checks their SHA-256 too.

The tokenizer is built the way transformers builds Qwen2's (`Qwen2Tokenizer`: NFC, Qwen2's split regex, byte-level
BPE) from the file's vocabulary and merges, plus Qwen2.5's 22 added tokens (the file's Qwen2-era vocabulary has
placeholders there) and the original Qwen2.5 chat template as TRL 1.16 ships it (`trl/chat_templates/qwen2_5.jinja`,
which TRL recognises: it swaps in its training template for assistant-only loss). Special tokens follow a Qwen2.5
*base* model (Qwen2.5-Math-1.5B, the real recipe's): eos and pad `<|endoftext|>`, no bos; the chat template ends an
assistant turn with `<|im_end|>`, not the eos. `<think>` / `</think>` are plain text, as in every Qwen2.5 model.

When the fetch is impossible (no network, pip cannot reach PyPI), `fetch` says so and exits 0 so that `make test` goes
on, and the tests that need these files skip with the reason; with `R1_REAL_TOKENIZER=required` (set by .ci/run) it
fails instead, and so do those tests. A file whose SHA-256 differs is always an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tasks.blocks.data import sha256

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("R1_REAL_CACHE", ROOT / ".cache" / "real"))
REQUIRED_ENV = "R1_REAL_TOKENIZER"  # "required": a fetch that cannot happen is an error, and the tests fail

SOURCE = {
    "package": "llama-cpp-python",
    "version": "0.3.36",
    "license": "MIT (llama-cpp-python and the vendored llama.cpp)",
    "sdist": "llama_cpp_python-0.3.36.tar.gz",
    "sdist_sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
}
# Members of the sdist extracted into the cache (flat, by their base name), with their SHA-256.
MEMBERS = {
    "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf":
        "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.inp":
        "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.out":
        "de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363",
    "llama_cpp_python-0.3.36/vendor/llama.cpp/LICENSE": None,  # kept beside the files it licenses; not hashed
}
GGUF = "ggml-vocab-qwen2.gguf"
FAILED = "FETCH_FAILED"  # written into the cache when the fetch was impossible: the tests' skip reason

# Qwen2.5's added tokens (ids 151643-151664): the first 14 are special (skipped when decoding with
# skip_special_tokens=True, as TRL does), the tool-call and fill-in-the-middle ones are not.
FIRST_ADDED_ID = 151643
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
VOCAB_SIZE = 151936  # Qwen2.5's embedding rows (the tokenizer has 151,665 tokens; the rest is padding)


class FetchError(RuntimeError):
    """The files could not be fetched here (no network, PyPI unreachable): tests skip unless they are required."""


def cached(cache: Path = CACHE) -> dict[str, Path] | None:
    """The extracted files by base name when all are present with their recorded SHA-256, else None."""
    files = {Path(member).name: cache / Path(member).name for member in MEMBERS}
    if not all(path.is_file() for path in files.values()):
        return None
    for member, expected in MEMBERS.items():
        path = files[Path(member).name]
        if expected is not None and sha256(path) != expected:
            raise RuntimeError(f"{path}: SHA-256 {sha256(path)} differs from the recorded {expected} "
                               f"(tasks/real_tokenizer.py); delete {cache} and run `make real-tokenizer` again")
    return files


def pip_download(package: str, version: str, filename: str, expected: str, dest: Path, *, wheel: bool = False) -> Path:
    """pip downloads one pinned file of `package`=`version` (its sdist, or with `wheel` its wheel) into `dest`,
    without its dependencies; pip refuses it, before anything runs from it, if its SHA-256 is not `expected`.
    Raises FetchError when pip cannot reach the package registry (the caller decides whether that is fatal)."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{package}=={version} --hash=sha256:{expected}\n")
    only = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *only, "--require-hashes",
               "--disable-pip-version-check", "-r", str(requirements), "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # its output says why
    if "DO NOT MATCH THE HASHES" in result.stdout + result.stderr:
        raise RuntimeError(f"pip downloaded {filename} with another SHA-256 than the recorded {expected}: "
                           f"refusing it\n{result.stderr.strip()}")
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).splitlines()
        why = "; ".join(line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")) or \
            (lines[-1] if lines else f"exit status {result.returncode}")
        raise FetchError(f"pip could not download {package}=={version} from PyPI: {why}")
    path = dest / filename
    if sha256(path) != expected:  # pip checked it; checked again, it is cheap
        raise RuntimeError(f"{path}: SHA-256 {sha256(path)} differs from the recorded {expected}")
    return path


def _download(dest: Path) -> Path:
    """pip downloads the pinned sdist into `dest`; pip refuses it, before building anything, if its hash differs."""
    return pip_download(SOURCE["package"], SOURCE["version"], SOURCE["sdist"], SOURCE["sdist_sha256"], dest)


def fetch(cache: Path = CACHE) -> dict[str, Path]:
    """The checked files in `cache`, downloading and extracting them first when they are missing."""
    files = cached(cache)
    if files is not None:
        return files
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="r1-real-") as tmp:
        try:
            sdist = _download(Path(tmp))
        except FetchError as exc:
            (cache / FAILED).write_text(f"{exc}\n", encoding="utf-8")
            raise
        with tarfile.open(sdist) as tar:
            for member, expected in MEMBERS.items():
                data = tar.extractfile(member).read()  # by name, into a name of ours: no path from the archive
                if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                    raise RuntimeError(f"{sdist}:{member}: SHA-256 differs from the recorded {expected}")
                partial = cache / f".{Path(member).name}.tmp"
                partial.write_bytes(data)
                partial.replace(cache / Path(member).name)
    (cache / FAILED).unlink(missing_ok=True)
    (cache / "source.json").write_text(json.dumps({**SOURCE, "files": MEMBERS}, indent=2) + "\n")
    return cached(cache)


def unavailable_reason(cache: Path = CACHE) -> str:
    """Why the files are not in the cache, for a test's skip message."""
    failed = cache / FAILED
    why = failed.read_text(encoding="utf-8").strip() if failed.exists() else "not fetched yet"
    return f"the real Qwen2.5 tokenizer files are not in {cache} ({why}); run `make real-tokenizer`"


def required() -> bool:
    return os.environ.get(REQUIRED_ENV) == "required"


def test_vectors(files: dict[str, Path]) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors: (text, token ids encoded without special tokens); the `.inp` file holds
    the texts, each followed by a `__ggml_vocab_test__` line, the `.out` file one line of ids per text."""
    texts = files[f"{GGUF}.inp"].read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    lines = files[f"{GGUF}.out"].read_text(encoding="utf-8").split("\n")
    if texts[-1] == "" and lines[-1] == "":  # each file ends with a separator / newline
        texts, lines = texts[:-1], lines[:-1]
    if len(texts) != len(lines):
        raise ValueError(f"{files[f'{GGUF}.inp']}: {len(texts)} texts but {len(lines)} lines of ids")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines)]


def qwen2_5_chat_template() -> str:
    """The original Qwen2.5 chat template, byte for byte as TRL ships it (so TRL recognises it)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")


def qwen2_5_tokenizer(gguf: Path):
    """A Qwen2.5 base model's tokenizer from llama.cpp's Qwen2 vocabulary file."""
    from tokenizers import AddedToken
    from transformers.integrations.gguf import read_gguf_metadata
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    metadata, _ = read_gguf_metadata(str(gguf), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
    if (metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre")) != ("gpt2", "qwen2"):
        raise ValueError(f"{gguf}: not a Qwen2 byte-level BPE vocabulary")
    tokens = metadata["tokenizer.ggml.tokens"]
    # The file's three control tokens sit where Qwen2.5's first three added tokens do.
    if tokens[FIRST_ADDED_ID:FIRST_ADDED_ID + 3] != [token for token, _ in ADDED_TOKENS[:3]]:
        raise ValueError(f"{gguf}: ids {FIRST_ADDED_ID}-{FIRST_ADDED_ID + 2} are not Qwen's control tokens")
    vocab = {token: index for index, token in enumerate(tokens[:FIRST_ADDED_ID])}
    merges = [tuple(merge.split(" ")) for merge in metadata["tokenizer.ggml.merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None,
                               pad_token=None, errors="replace", model_max_length=131072,
                               clean_up_tokenization_spaces=False, split_special_tokens=False)
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in ADDED_TOKENS])
    ids = tokenizer.convert_tokens_to_ids([token for token, _ in ADDED_TOKENS])
    if ids != list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(ADDED_TOKENS))):
        raise ValueError(f"Qwen2.5's added tokens got ids {ids[0]}..{ids[-1]}, not {FIRST_ADDED_ID}..")
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                                  "additional_special_tokens": [t for t, special in ADDED_TOKENS[1:] if special]})
    tokenizer.chat_template = qwen2_5_chat_template()
    return tokenizer


def tiny_qwen2_config(tokenizer):
    """Qwen2.5's layout (vocabulary, tied embeddings, grouped-query attention, rope base) at a tiny size: 2.4 M
    parameters, almost all of them the embedding."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
                       bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                       eos_token_id=tokenizer.eos_token_id)


def end_turns(model, token_id: int, probability: float) -> None:
    """Make a random model end its chat turn as a chat-tuned one does: at temperature 1 it samples `token_id` with
    about this probability at every step (far more at lower temperatures, always when greedy), the other tokens
    almost uniformly as before.

    One residual dimension (0) is made the same for every input (the embeddings' column 0 is set to 1, no layer
    writes into it), so after the final norm it is about sqrt(hidden_size) at every position; with tied embeddings
    each token's logit then gets that times its own column-0 entry, which is raised for `token_id` alone."""
    import math

    import torch

    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    lift = math.log(probability / (1 - probability) * (vocab - 1))  # logit over the ~0 of the other tokens
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[:, 0] = 1.0
        embedding[token_id, 0] = 1.0 + lift / math.sqrt(hidden)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0


def build_tiny_model(out: Path, gguf: Path, seed: int = 0, ends_turns: float | None = None) -> Path:
    """A model directory as a real Qwen2.5 base model has one: config, generation config (eos `<|endoftext|>`, as
    Qwen2.5's base models ship it), safetensors weights, tokenizer files and chat template. With `ends_turns`, the
    random model ends its turn with `<|im_end|>` (see end_turns), as after chat SFT, rather than running on."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    tokenizer = qwen2_5_tokenizer(gguf)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_qwen2_config(tokenizer))
    if ends_turns is not None:
        end_turns(model, tokenizer.convert_tokens_to_ids("<|im_end|>"), ends_turns)
    model.generation_config = GenerationConfig(bos_token_id=FIRST_ADDED_ID, eos_token_id=tokenizer.eos_token_id,
                                               do_sample=False, max_new_tokens=2048)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download, check and extract the files into the cache (no-op when present)")
    tiny = commands.add_parser("tiny-model", help="write a tiny random Qwen2.5-shaped model directory")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--ends-turns", type=float, metavar="P",
                      help="end the turn with <|im_end|> with probability P per token at temperature 1")
    args = parser.parse_args()
    try:
        files = fetch()
    except FetchError as exc:
        if required() or args.command != "fetch":
            raise SystemExit(f"error: {exc}") from None
        print(f"warning: {exc}\nThe tests that need the real Qwen2.5 tokenizer will be skipped "
              f"(set {REQUIRED_ENV}=required to make this an error).", file=sys.stderr)
        return
    if args.command == "fetch":
        print(f"real Qwen2.5 tokenizer files checked in {CACHE}")
    else:
        print(build_tiny_model(args.out, files[GGUF], args.seed, args.ends_turns))


if __name__ == "__main__":
    main()
