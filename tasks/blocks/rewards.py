"""Reward functions for GRPO (TRL) and for rejection sampling: accuracy, format and language consistency.

Contract: every reward is called as `f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`,
ignores the keyword arguments it does not use, and returns one float per completion. A completion is a plain
string or a conversation (a list of message dicts; the content of the last message is scored).

- accuracy: 1.0 when the final answer equals the gold `answer` column, judged by math-verify. The answer is read
  after `</think>` (a `\\boxed{}` inside the reasoning does not count); several different boxed answers score 0.0.
  math-verify runs in a child process killed after ITEM_TIMEOUT_S, so hostile completions (power towers,
  200,000-digit numbers, deep nesting) never hang or crash the trainer, and it works off the main thread.
- format: 1.0 for `<think>reasoning</think>` at the start followed by a summary holding a `\\boxed{}` answer.
- language_consistency: the share of the reasoning's words in the target language (DeepSeek-R1's definition).

`final_answer` is the one reading of "the final answer" (what accuracy judges and a majority vote counts);
`score_batch` scores many completions on all cores with the same code and can return those answers too;
`REWARD_FUNCS` / `get_reward_funcs` is the registry the trainer reads reward names from.

The judge's LaTeX parser: latex2sympy2 ships ANTLR parsers generated for runtimes 4.9.3, 4.11 and 4.13.2, and its
4.9.3 parser is older than its converter (every `\\%` answer fails to parse). dvc's hydra pin holds the runtime at
4.9.3 in the main environment, so the judge processes put antlr4-python3-runtime 4.13.2 from a directory of their
own (JUDGE_LIBS, installed by `make venv` or `python -m tasks.blocks.rewards --install-judge`) first on their path.
Nothing else in a judge process imports antlr, so the two runtimes never meet.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import re
import subprocess
import sys
import threading
import unicodedata
import weakref
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ITEM_TIMEOUT_S = 2.5  # wall-clock bound on judging one completion (a worker's boot is not counted)
# Judged once by each judge process before it reports ready (see _serve): a LaTeX answer, and a wrong one in plain text.
JUDGE_WARM_UP = (("<think>\n1/2 + 1/4 = 3/4.\n</think>\nThe answer is \\boxed{\\frac{3}{4}}.", "3/4"),
                 ("Instead of using 1/2 to represent the total amount", "18"))
# Boot of a judge process (python, the sympy import, JUDGE_WARM_UP): a few seconds idle; 91 s was seen on this 2-core
# machine under a load of 6 at nice 19.
WORKER_START_TIMEOUT_S = 300.0
WORKER_MEMORY_BYTES = 4 << 30  # address-space cap of a judge process: a power tower fails fast, not the host
MAX_ANSWER_CHARS = 1_000  # a longer boxed answer scores 0.0 without being parsed
MAX_SUMMARY_CHARS = 2_000  # without \boxed{}, only the end of the summary is searched for an answer
MAX_ANSWERS = 8  # more distinct boxed answers than this is hedging: 0.0 without parsing
MAX_NESTING = 10  # deeper bracket nesting scores 0.0: the LaTeX parser slows down exponentially with depth

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

JUDGE_ANTLR = "4.13.2"  # the ANTLR runtime whose generated parser matches latex2sympy2's converter
# Where that runtime is installed for the judge processes (pip --target): beside the interpreter's environment.
JUDGE_LIBS = Path(os.environ.get("R1_JUDGE_LIBS", Path(sys.prefix) / "judge-libs"))


# ----------------------------------------------------------------------------- text helpers

def completion_text(completion: Any) -> str:
    """The text of a completion: a string, a conversation (last message's content) or a single message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        return completion_text(completion[-1]) if completion else ""
    if isinstance(completion, dict):
        content = completion.get("content")
        if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}]
            return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
        return content if isinstance(content, str) else ""
    return ""


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, summary) around the last `</think>`; reasoning is None when there is no `</think>`.

    The reasoning starts after the first `<think>`, or at the start of the text when the chat template already
    put `<think>` in the prompt. Without `</think>` the whole text is the summary."""
    head, close, summary = text.rpartition(THINK_CLOSE)
    if not close:
        return None, text
    start = head.find(THINK_OPEN)
    reasoning = head[start + len(THINK_OPEN):] if start != -1 else head
    return reasoning, summary


# `\\` is a token so that `\\{` reads as a line break then a group, and `\{ \}` (set braces) are skipped.
_BRACE_TOKEN = re.compile(r"\\\\|\\boxed\s*\{|\\[{}]|[{}]")


def extract_boxed(text: str) -> list[str]:
    """Contents of all outermost `\\boxed{...}` with balanced braces, in order; unbalanced ones are skipped.

    One pass with a stack, so unclosed `\\boxed{` in hostile text cannot make it quadratic."""
    stack: list[tuple[bool, int]] = []  # (opened by \boxed, index where its content starts)
    spans: list[tuple[int, int]] = []
    for match in _BRACE_TOKEN.finditer(text):
        token = match.group()
        if token.startswith("\\boxed"):
            stack.append((True, match.end()))
        elif token == "{":
            stack.append((False, match.end()))
        elif token == "}" and stack:
            boxed, start = stack.pop()
            if boxed:
                spans.append((start, match.start()))
    spans.sort()
    contents, end = [], -1
    for start, stop in spans:
        if start > end:  # not nested inside the previous boxed answer
            contents.append(text[start:stop])
            end = stop
    return contents


def _squash(text: str) -> str:
    return "".join(text.split())


_BRACKET = re.compile(r"[(\[{]|[)\]}]")


def _nesting(text: str) -> int:
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        depth = depth + 1 if match.group() in "([{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


# ----------------------------------------------------------------------------- accuracy

def _answer_spans(text: str) -> tuple[str, dict[str, str]] | None:
    """What a completion answers, before any parsing: ("boxed", {squashed: answer}) for the distinct boxed answers
    of its summary, ("tail", {"": tail}) for a summary without one (math-verify reads "The answer is 7." there), or
    None when it answers nothing that may be judged (no summary, an unclosed reasoning block, too many, too long or
    too deeply nested answers)."""
    _, summary = split_reasoning(text.replace("\x00", ""))
    if THINK_OPEN in summary or not summary.strip():  # a reasoning block that is never closed, or no summary
        return None
    boxes = extract_boxed(summary)
    if not boxes:
        tail = summary[-MAX_SUMMARY_CHARS:]
        return None if _nesting(tail) > MAX_NESTING else ("tail", {"": tail})
    answers = {_squash(box): box.strip() for box in boxes if box.strip()}  # the same answer twice is fine
    if not answers or len(answers) > MAX_ANSWERS or any(len(a) > MAX_ANSWER_CHARS for a in answers):
        return None
    if any(_nesting(answer) > MAX_NESTING for answer in answers):
        return None
    return "boxed", answers


def _prepare(text: str, gold: Any) -> bool | tuple[list[str], str]:
    """Cheap checks before math-verify: a verdict when they decide, else (predictions, gold) to verify."""
    if gold is None:
        return False
    gold = str(gold).replace("\x00", "").strip()
    spans = _answer_spans(text)
    if spans is None or not gold:
        return False
    kind, answers = spans
    if kind == "tail":
        return [answers[""]], gold  # math-verify's own extraction
    gold_boxes = extract_boxed(gold)
    if list(answers) == [_squash(gold_boxes[-1] if gold_boxes else gold.strip("$"))]:
        return True  # identical text is equal, even where sympy would hang evaluating it
    return [f"\\boxed{{{answer}}}" for answer in answers.values()], gold


def _extracted(tail: str) -> str | None:
    """The answer math-verify reads in a summary without a boxed answer (its own extraction), or None."""
    from math_verify import parse

    parsed = parse(tail, parsing_timeout=None)
    return _squash(parsed[-1]) if parsed and isinstance(parsed[-1], str) and parsed[-1].strip() else None


def _final_answer_here(text: str) -> str | None:
    spans = _answer_spans(text)
    if spans is None:
        return None
    kind, answers = spans
    if kind == "tail":
        return _extracted(answers[""])
    return " ; ".join(answers)  # a hedge is one (wrong) answer of its own


def final_answer(text: str) -> str | None:
    """The final answer of a completion, whitespace removed: what accuracy judges and a majority vote counts.

    The distinct boxed answers of the summary (joined by " ; " when it hedges), or, in a summary without one, the
    answer math-verify extracts there ("The answer is 7." gives "7"); None when it gives no answer."""
    spans = _answer_spans(text)
    if spans is None or spans[0] == "boxed":
        return _final_answer_here(text)
    return _shared_worker().call(_final_answer_here, text)


_PLAIN_NUMBER = re.compile(r"[+-]?\d+(,\d+)+(\.\d+)?")  # "1,000", "1,234.5" and decimal commas ("1,22")


def _parse_gold(gold: str) -> list:
    from math_verify import parse

    # Plain golds ("18", "\frac12", "(x+1)^2") need delimiters before math-verify reads them whole, except a
    # number with commas: inside delimiters "1,22" is the set {1, 22}, where math-verify's plain reading gives 1.22
    # (and "1,000" 1000).
    delimited = "$" in gold or "\\boxed" in gold or _PLAIN_NUMBER.fullmatch(gold) is not None
    candidates = [gold] if delimited else []
    candidates += [f"\\boxed{{{gold}}}", f"${gold}$", gold]
    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def _verify(predictions: list[str], gold: str) -> bool:
    """math-verify judge, without its signal-based timeouts: only call it in a judge process (or bound it)."""
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return False
    # Every distinct answer must be right: a hedge ("\boxed{3} or \boxed{4}") scores 0.0.
    return all(verify(gold_parsed, parse(p, parsing_timeout=None), timeout_seconds=None) for p in predictions)


def _is_correct_here(text: str, gold: Any) -> bool:
    job = _prepare(text, gold)
    return job if isinstance(job, bool) else _verify(*job)


def is_correct(text: str, gold: Any) -> bool:
    """True when the final answer of a completion's text equals `gold` (the judge behind accuracy_reward)."""
    job = _prepare(text, gold)
    if isinstance(job, bool):
        return job
    return _shared_worker().call(_verify, *job) is True


def accuracy_reward(completions: list, answer: Sequence[str] | str, **kwargs: Any) -> list[float]:
    """1.0 when a completion's final answer equals the gold `answer` (one per completion), else 0.0."""
    golds = [answer] * len(completions) if isinstance(answer, str) else answer
    return [float(is_correct(completion_text(c), gold)) for c, gold in zip(completions, golds, strict=True)]


# ----------------------------------------------------------------------------- format

_FORMAT = re.compile(r"\s*<think>(.*)</think>(.*)", re.DOTALL)


def has_format(text: str) -> bool:
    """Exactly one leading `<think>...</think>` with non-empty reasoning, then a summary with a boxed answer."""
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return False
    match = _FORMAT.fullmatch(text)
    if match is None:
        return False
    reasoning, summary = match.groups()
    return bool(reasoning.strip()) and any(box.strip() for box in extract_boxed(summary))


def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """1.0 for `<think>reasoning</think>` followed by a summary holding a `\\boxed{}` answer, else 0.0."""
    return [float(has_format(completion_text(c))) for c in completions]


# ----------------------------------------------------------------------------- language consistency

# Small lexicons: stop words, number words and the vocabulary of arithmetic word problems. A word in the lexicon
# of another language, and not in the target's, is foreign; words in no lexicon count as the target language.
LEXICONS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        the an and or but if then so because since of to in on at by for with from into onto over under about
        between through after before as is are was were be been being am do does did done has have had having
        will would can could should must may might it its itself this that these those there here he she they we
        you me my mine his her hers their theirs our ours your yours him them us what which who whom whose when
        where why how not no yes all each every some any many much more most less least few other another such
        only also just than too very same both either neither let lets find total number numbers answer final
        step steps solve solution value equal equals equation plus minus times divided multiplied product sum
        difference half twice double triple quarter one two three four five six seven eight nine ten eleven twelve
        thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy
        eighty ninety hundred thousand million millions billion zero first second third next last now therefore
        thus hence need needs get gets got give gives gave make makes made take takes took buys bought apples
        apple dollars cents cent euros per wait check calculate compute know think okay well starts start left
        son quart car pour ton tons non biscuits tiers
    """.split()),
    "fr": frozenset("""
        le la les un une des du de et ou où est sont ai avons avez ont il elle ils elles je tu nous vous on ce cet
        cette ces ceci cela ça qui que qu quoi dont mais donc car ni pour par avec sans dans sur sous entre chez
        vers ne pas plus moins très aussi bien tout tous toute toutes chaque autre autres même alors ainsi comme
        leur leurs son sa ses mon ma mes ton ta tes notre nos votre vos au aux été être avoir fait faire font faut
        peut doit donne donnent donné calculons calculer calcule nombre reste restent fois divisé divise divisée
        égale égal égalent egal egale multiplié multiplie multiplions additionne ajoute ajoutons soustrait
        soustrayons somme produit différence réponse reponse finale ensuite puis premier première deuxième
        troisième étape maintenant combien chacun chacune zéro deux trois quatre cinq six sept huit neuf dix onze
        douze treize quatorze quinze seize vingt trente quarante cinquante soixante cent cents mille million
        millions milliard moitié double triple quart tiers vérifions vérifier oui non voici voilà abord commence
        commencé achète achètent trouve reçoit perd utilise obtient obtenons avait était sera aura pommes pomme
        stylos livres pièces cartes billes autocollants coquillages timbres biscuits euros dollars me lui an total
        final solution
    """.split()),
}

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A CJK character is a word on its own (no spaces between words); single Latin or Greek letters are not words,
# they are nearly always math variables (x, y, π).
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]{{2,}}")
_NON_LATIN = re.compile(
    r"[^\u0000-\u02af\u1d00-\u1dbf\u1e00-\u1eff\u2100-\u214f\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f"
    r"\ufb00-\ufb06\uff21-\uff3a\uff41-\uff5a\U0001d400-\U0001d7ff]"
)
_FOREIGN_WORDS = {
    language: frozenset().union(*(words for other, words in LEXICONS.items() if other != language)) - words
    for language, words in LEXICONS.items()
}


def _language_code(language: Any) -> str:
    code = re.split(r"[-_]", str(language or "en").strip().lower())[0]
    if code not in LEXICONS:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LEXICONS)}")
    return code


def language_share(text: str, language: str = "en") -> float:
    """Share (0..1) of the words of `text` in `language`; 1.0 when it has no words.

    A word is foreign when it has letters of a non-Latin script (all supported targets are Latin-script) or is
    in another language's lexicon but not the target's."""
    foreign_words = _FOREIGN_WORDS[_language_code(language)]
    words = _WORD.findall(unicodedata.normalize("NFC", text).casefold())
    if not words:
        return 1.0
    foreign = sum(1 for w in words if w in foreign_words or _NON_LATIN.search(w))
    return 1.0 - foreign / len(words)


def reasoning_text(text: str) -> str:
    """The reasoning of a completion: inside <think>...</think>, to the end for an unclosed <think>, else all."""
    reasoning, _ = split_reasoning(text)
    if reasoning is None:
        reasoning = text.split(THINK_OPEN, 1)[1] if THINK_OPEN in text else text
    return reasoning.replace(THINK_OPEN, " ").replace(THINK_CLOSE, " ")


def language_consistency_reward(completions: list, language: Sequence[str] | str = "en",
                                **kwargs: Any) -> list[float]:
    """Share of the reasoning's words in the target `language` (a str, or one per completion)."""
    languages = [language] * len(completions) if language is None or isinstance(language, str) else language
    return [language_share(reasoning_text(completion_text(c)), lang)
            for c, lang in zip(completions, languages, strict=True)]


# ----------------------------------------------------------------------------- registry

REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "language_consistency": language_consistency_reward,
}


def get_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """The reward functions for `names`, in order; ValueError on an unknown name."""
    for name in names:
        if name not in REWARD_FUNCS:
            raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(REWARD_FUNCS)}")
    return [REWARD_FUNCS[name] for name in names]


# Which prompts each reward applies to, by the prompt's `kind` column: rule rewards judge reasoning prompts, the
# reward model's rewards (tasks/blocks/model_rewards.py) judge general and harmful prompts.
PROMPT_KIND = {"accuracy": "reasoning", "format": "reasoning", "language_consistency": "reasoning",
               "helpfulness": "general", "harmlessness": "harmful"}


def only_for(kind: str, func: Callable[..., list[float]]) -> Callable[..., list[float | None]]:
    """`func` on the completions whose prompt is of `kind`, None for the others (TRL skips None rewards, so a
    prompt of a mixed batch gets only the rewards of its kind). Rows without a `kind` column are all of `kind`."""

    def routed(completions: list, **kwargs: Any) -> list[float | None]:
        kinds = kwargs.pop("kind", None)
        n = len(completions)
        picked = [i for i in range(n) if kinds is None or kinds[i] == kind]
        if len(picked) == n:
            return func(completions=completions, **kwargs)
        scores: list[float | None] = [None] * n
        if picked:
            columns = {key: [value[i] for i in picked] if isinstance(value, list) and len(value) == n else value
                       for key, value in kwargs.items()}
            for i, score in zip(picked, func(completions=[completions[i] for i in picked], **columns), strict=True):
                scores[i] = score
        return scores

    routed.__name__ = getattr(func, "__name__", "reward")  # TRL logs rewards/<name>/mean
    return routed


# ----------------------------------------------------------------------------- judge processes

def _serve(fd: int) -> None:
    """Body of a judge process: run (function, args) requests from the parent until it goes away."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning is handled here
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_BYTES)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass
    conn = Connection(fd)
    from importlib.metadata import version

    antlr = version("antlr4-python3-runtime")
    if antlr != JUDGE_ANTLR:
        conn.send(f"antlr4-python3-runtime {antlr} (not {JUDGE_ANTLR})")
        return
    import math_verify  # noqa: F401  (pay the sympy import before reporting ready)

    # ... and the judge's lazy first uses: ANTLR builds the LaTeX parser's prediction tables on its first parse, and
    # sympy's simplify imports sympy.physics on its first call (a wrong answer compared symbolically). On this loaded
    # 2-core machine each took 5-20 s, past ITEM_TIMEOUT_S: a fresh worker overran on its first such item, was
    # replaced by another cold one, and every such item scored 0.0 after a boot and a timeout.
    for text, gold in JUDGE_WARM_UP:
        _score_item(text, gold, ("accuracy",), "en", False)
    conn.send("ready")
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = fn(*args)
        except Exception:  # MemoryError and RecursionError included: the item scores 0.0, the process lives on
            result = None
        conn.send(result)


def _kill(process: subprocess.Popen, conn: Connection, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked copy of the owner must not kill the owner's process
        return
    conn.close()
    process.kill()
    process.wait()


class _Worker:
    """A child Python process running functions of this module, killed and replaced when a call overruns.

    A plain subprocess rather than multiprocessing: no signals (works on any thread), no re-import of the
    caller's __main__, and nothing inherited from a trainer holding CUDA state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._ready = False
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> None:
        parent_end, child_end = multiprocessing.Pipe()
        paths = [str(JUDGE_LIBS)] + [path or os.getcwd() for path in sys.path]
        code = f"import sys; sys.path[:0] = {paths!r}; from {__name__} import _serve; _serve({child_end.fileno()})"
        process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[child_end.fileno()],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        child_end.close()
        self._conn, self._ready = parent_end, False
        self._finalizer = weakref.finalize(self, _kill, process, parent_end, os.getpid())

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._conn, self._finalizer = None, None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._start()
        if not self._ready:
            answer = None
            try:
                answer = self._conn.recv() if self._conn.poll(WORKER_START_TIMEOUT_S) else None
            except (EOFError, OSError):
                pass
            self._ready = answer == "ready"
            if not self._ready:
                self.stop()
                if isinstance(answer, str):  # the wrong parser runtime: percent answers would all score 0.0
                    raise RuntimeError(
                        f"the math-verify judge found {answer} on its path: its LaTeX parser needs "
                        f"antlr4-python3-runtime {JUDGE_ANTLR} in {JUDGE_LIBS}; install it with "
                        f"`{sys.executable} -m tasks.blocks.rewards --install-judge` (`make venv` does)")
                raise RuntimeError(f"the math-verify judge process did not start (is {__name__} importable "
                                   f"from {sys.executable}?)")
        return self._conn

    def call(self, fn: Callable, *args: Any, timeout: float = ITEM_TIMEOUT_S) -> Any:
        """fn(*args) in the child process; None when it raised, crashed or ran past `timeout` seconds."""
        with self._lock:
            conn = self._connection()
            try:
                conn.send((fn, args))
                if conn.poll(timeout):
                    return conn.recv()
            except (EOFError, OSError):
                pass
            # Sympy stuck in C (a huge power) ignores everything but SIGKILL; boot the replacement right away.
            self.stop()
            self._start()
            return None


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _shared_worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


def _forget_worker() -> None:
    # A forked child must not talk to its parent's judge through the inherited pipe: it starts its own.
    global _worker, _worker_lock
    _worker, _worker_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


# ----------------------------------------------------------------------------- batch scoring

def _score_here(name: str, text: str, gold: Any, language: str) -> float:
    if name == "accuracy":
        return float(_is_correct_here(text, gold))
    return REWARD_FUNCS[name]([text], answer=[gold], language=language)[0]


def _score_item(text: str, gold: Any, names: tuple[str, ...], language: str, answer: bool
                ) -> tuple[list[float], str | None]:
    return [_score_here(name, text, gold, language) for name in names], _final_answer_here(text) if answer else None


def score_batch(completions: Iterable, answers: Iterable[str] | None,
                reward_names: Sequence[str] = ("accuracy", "format", "language_consistency"),
                processes: int | None = None, chunk_size: int = 1024, language: str = "en",
                final_answers: bool = False) -> dict[str, list]:
    """Score many completions on `processes` judge processes (default: all cores); same results as the rewards.

    With `final_answers`, the result also holds "final_answer": each completion's `final_answer` (None on overrun).
    Inputs are consumed `chunk_size` items at a time, so only one chunk of texts is in memory. Each item keeps the
    ITEM_TIMEOUT_S bound: on overrun its accuracy is 0.0 and its cheap rewards are computed here instead."""
    names = tuple(reward_names)
    get_reward_funcs(names)
    _language_code(language)
    processes = max(1, processes or os.cpu_count() or 1)
    items = zip(completions, answers if answers is not None else itertools.repeat(None))
    idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
    workers: list[_Worker] = []

    def score(item: tuple[Any, Any]) -> tuple[list[float], str | None]:
        text, gold = completion_text(item[0]), item[1]
        worker = idle.get()
        try:
            result = worker.call(_score_item, text, gold, names, language, final_answers)
        finally:
            idle.put(worker)
        if result is None:
            result = [0.0 if name == "accuracy" else _score_here(name, text, gold, language) for name in names], None
        return result

    results: dict[str, list] = {name: [] for name in names}
    if final_answers:
        results["final_answer"] = []
    try:
        with ThreadPoolExecutor(processes) as threads:
            while chunk := list(itertools.islice(items, chunk_size)):
                while len(workers) < min(processes, len(chunk)):  # a handful of items needs few processes
                    workers.append(_Worker())
                    idle.put(workers[-1])
                for scores, answer in threads.map(score, chunk):
                    for name, value in zip(names, scores):
                        results[name].append(value)
                    if final_answers:
                        results["final_answer"].append(answer)
    finally:
        for worker in workers:
            worker.stop()
    return results


def install_judge(target: Path = JUDGE_LIBS) -> None:
    """pip-install the judge's ANTLR runtime into `target` (its own directory: the main environment keeps dvc's)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target",
                    str(target), f"antlr4-python3-runtime=={JUDGE_ANTLR}"], check=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The judge's own ANTLR runtime (see this module's docstring).")
    parser.add_argument("--install-judge", action="store_true", help=f"install it into {JUDGE_LIBS}")
    if parser.parse_args().install_judge:
        install_judge()
