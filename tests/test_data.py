import pytest

from tasks.blocks.data import DataError, read_jsonl, write_jsonl


def test_round_trip_is_deterministic(tmp_path):
    rows = [{"id": "a", "x": "é"}, {"id": "b", "x": 1}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", rows)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert read_jsonl(tmp_path / "a.jsonl") == rows


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a"}\n{"id": \n', ":2: broken JSON line"),
    (b'{"id": "a"}\n{"x": 1}\n', ":2: missing field(s) id"),
    (b"", "empty file"),
    (b'{"id": "a", "x": "\xff"}\n', ":1: not valid UTF-8"),
    (b'{"id": "a"}\n{"id": "a"}\n', ":2: duplicate id 'a' (first on line 1)"),
    (b"[1, 2]\n", ":1: expected a JSON object"),
])
def test_bad_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_jsonl(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
