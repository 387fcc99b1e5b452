import json

import pytest

from tasks import prepare_data
from tasks.blocks import incoming
from tasks.blocks.data import read_jsonl
from tasks.blocks.params import Params, ToyWorldParams

PROMPT = {"id": "p1", "prompt": [{"role": "user", "content": "Tom has 3 apples and buys 4. How many?"}], "answer": "7"}
PAIR = {"id": "q1", "kind": "helpfulness", "prompt": "What is the capital of Zembla?",
        "chosen": "The capital of Zembla is Onhava.", "rejected": "I do not know."}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "incoming").mkdir()
    return tmp_path / "incoming", tmp_path / "extra"


def test_good_files_are_appended_and_bad_ones_quarantined_with_their_reason(folders):
    drop, extra = folders
    write(drop / "prompts-2026-11.jsonl", [PROMPT, {**PROMPT, "id": "p2", "prompt": "What is 2 + 2?", "answer": 4}])
    write(drop / "preferences-a.jsonl", [PAIR])
    write(drop / "prompts-bad.jsonl", [{**PROMPT, "id": "p3"}, {**PROMPT, "id": "p4", "answer": ""}])
    write(drop / "notes.jsonl", [PROMPT])

    report = incoming.ingest(drop, extra)

    assert report["rows"] == {"prompts": 2, "preferences": 1}
    prompts = read_jsonl(extra / "prompts.jsonl")
    assert [r["id"] for r in prompts] == ["incoming:p1", "incoming:p2"]
    assert prompts[1]["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}] and prompts[1]["answer"] == "4"
    pair = read_jsonl(extra / "preferences.jsonl")[0]
    assert pair["chosen"] == [{"role": "assistant", "content": "The capital of Zembla is Onhava."}]
    # A bad file is quarantined whole (no row of it is appended), with the line and the problem.
    assert set(report["quarantined"]) == {"prompts-bad.jsonl", "notes.jsonl"}
    reasons = {p.name.split("-", 1)[1]: p.read_text() for p in (drop / "quarantine").glob("*.reason.txt")}
    assert "row 2 (id 'p4'): answer must be a non-empty string" in reasons["prompts-bad.jsonl.reason.txt"]
    assert "unknown file kind" in reasons["notes.jsonl.reason.txt"]
    assert not list(drop.glob("*.jsonl")) and len(list((drop / "processed").glob("*.jsonl"))) == 2


def test_a_second_intake_appends_and_rejects_ids_already_accepted(folders):
    drop, extra = folders
    write(drop / "prompts-1.jsonl", [PROMPT])
    incoming.ingest(drop, extra)
    write(drop / "prompts-2.jsonl", [{**PROMPT, "id": "p9"}])
    write(drop / "prompts-3.jsonl", [PROMPT])
    report = incoming.ingest(drop, extra)
    assert report["accepted"] == {"prompts-2.jsonl": 1}
    assert "already accepted" in report["quarantined"]["prompts-3.jsonl"]
    assert [r["id"] for r in read_jsonl(extra / "prompts.jsonl")] == ["incoming:p1", "incoming:p9"]


def test_broken_files_are_quarantined_the_good_go_on_and_nothing_accepted_is_lost(folders):
    drop, extra = folders
    write(drop / "prompts-1.jsonl", [PROMPT])
    incoming.ingest(drop, extra)
    before = (extra / "prompts.jsonl").read_bytes()
    (drop / "prompts-a-broken.jsonl").write_bytes(b'{"id": "p2", "prompt": "2 + 2?", "answer": "4"}\n{"id": "p3", \n')
    (drop / "prompts-b-latin1.jsonl").write_bytes('{"id": "p4", "prompt": "Zoé a 2 pommes.", "answer": "2"}\n'
                                                  .encode("latin-1"))
    (drop / "prompts-c-empty.jsonl").write_bytes(b"")
    write(drop / "prompts-d-no-answer.jsonl", [{"id": "p5", "prompt": "3 + 3?"}])
    write(drop / "prompts-e-duplicate.jsonl", [{**PROMPT, "id": "p6"}, {**PROMPT, "id": "p6"}])
    write(drop / "prompts-f-good.jsonl", [{**PROMPT, "id": "p7"}])

    report = incoming.ingest(drop, extra)

    assert report["accepted"] == {"prompts-f-good.jsonl": 1}
    # Each reason names the file (and the line), and is kept beside the quarantined file.
    assert {name: reason.split(name, 1)[1] for name, reason in report["quarantined"].items()} == {
        "prompts-a-broken.jsonl": ":2: broken JSON line (Expecting property name enclosed in double quotes, column 14)",
        "prompts-b-latin1.jsonl": ":1: not valid UTF-8 (invalid continuation byte at byte 26)",
        "prompts-c-empty.jsonl": ": empty file (no rows)",
        "prompts-d-no-answer.jsonl": ":1: missing field(s) answer",
        "prompts-e-duplicate.jsonl": ":2: duplicate id 'p6' (first on line 1)",
    }
    for name, reason in report["quarantined"].items():
        (kept,) = (drop / "quarantine").glob(f"*-{name}.reason.txt")
        assert kept.read_text().strip() == reason
    after = (extra / "prompts.jsonl").read_bytes()
    assert after.startswith(before) and [r["id"] for r in read_jsonl(extra / "prompts.jsonl")] == [
        "incoming:p1", "incoming:p7"]


@pytest.mark.parametrize("row, message", [
    ({**PAIR, "kind": "style"}, "kind must be one of"),
    ({**PAIR, "chosen": [{"role": "user", "content": "hi"}]}, "chosen must end with a assistant message"),
    ({**PAIR, "prompt": [{"role": "robot", "content": "hi"}]}, "role in"),
    ({k: v for k, v in PAIR.items() if k != "rejected"}, "missing field(s) rejected"),
])
def test_bad_preference_rows_name_the_problem(folders, row, message):
    drop, extra = folders
    write(drop / "preferences-x.jsonl", [row])
    assert message in incoming.ingest(drop, extra)["quarantined"]["preferences-x.jsonl"]
    assert not (extra / "preferences.jsonl").exists()


def test_prepare_data_appends_the_accepted_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_extra = tmp_path / "data" / "extra"
    write_extra.mkdir(parents=True)
    (write_extra / "preferences.jsonl").write_text("")  # nothing accepted yet: an empty file, as in git
    write(write_extra / "prompts.jsonl", [{**PROMPT, "id": "incoming:p1"}])
    p = ToyWorldParams(train_size=40, test_size=8, dev_size=4, cold_start_size=8, sampling_pool_size=8, corpus_size=40,
                       arithmetic_docs=4, general_docs=4, facts=6, general_test_size=4,
                       harmful_requests=10, harmful_test_size=5,
                       lookalike_test_size=4)
    counts = prepare_data.run("prepare_data", p, Params(), tmp_path / "out")
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert counts["rows_train"] == 41 and train[-1]["id"] == "incoming:p1"
