"""hora.memo: results remembered on disk are returned only for an equal key, and a broken cache costs only time."""

from __future__ import annotations

import json
import os

import pytest

from hora import memo


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_an_equal_key_is_computed_once(tmp_path):
    compute, calls = counting({"a": [1, 2.5, "x"]})
    key = {"weights": "abc", "prompt": "To be"}
    assert memo.remembered("demo", key, compute, cache_dir=tmp_path) == {"a": [1, 2.5, "x"]}
    assert memo.remembered("demo", dict(reversed(key.items())), compute, cache_dir=tmp_path) == {"a": [1, 2.5, "x"]}
    assert len(calls) == 1
    memo.remembered("demo", {**key, "prompt": "Not to be"}, compute, cache_dir=tmp_path)
    memo.remembered("other-kind", key, compute, cache_dir=tmp_path)
    assert len(calls) == 3


def test_an_entry_of_another_key_or_a_damaged_one_is_recomputed(tmp_path):
    compute, calls = counting([1])
    memo.remembered("demo", "key", compute, cache_dir=tmp_path)
    (entry,) = (tmp_path / "memo" / "demo").iterdir()
    entry.write_text(json.dumps({"key": "another key", "value": [666]}))  # as if two keys shared a digest
    assert memo.remembered("demo", "key", compute, cache_dir=tmp_path) == [1]
    entry.write_text('{"key": "ke')  # a torn write from some other tool
    assert memo.remembered("demo", "key", compute, cache_dir=tmp_path) == [1]
    assert len(calls) == 3
    assert json.loads(entry.read_text()) == {"key": "key", "value": [1]}  # repaired


def test_a_cache_that_cannot_be_written_still_answers(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    compute, calls = counting(7)
    assert memo.remembered("demo", 1, compute, cache_dir=blocker) == 7
    assert memo.remembered("demo", 1, compute, cache_dir=blocker) == 7
    assert len(calls) == 2 and "could not remember demo" in caplog.text


def test_the_cache_follows_hora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HORA_CACHE", str(tmp_path))
    memo.remembered("demo", 1, lambda: 2)
    assert memo.memo_dir() == tmp_path / "memo" and len(list((tmp_path / "memo" / "demo").iterdir())) == 1


def test_kind_is_a_folder_name_not_a_path(tmp_path):
    with pytest.raises(ValueError, match="letters, digits and dashes"):
        memo.remembered("../escape", 1, lambda: 2, cache_dir=tmp_path)


def test_fingerprint_changes_with_any_byte_or_name(tmp_path):
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    first = memo.fingerprint([folder])
    assert memo.fingerprint([folder]) == first
    (folder / "sub" / "w.bin").write_bytes(b"\x00" * 9 + b"\x01")
    second = memo.fingerprint([folder])
    (folder / "sub" / "w.bin").rename(folder / "sub" / "v.bin")
    third = memo.fingerprint([folder])
    assert len({first, second, third}) == 3
    assert memo.fingerprint([folder / "a.json"]) != memo.fingerprint([folder])


def test_environment_names_the_code_results_depend_on():
    found = memo.environment()
    assert set(found) == {"torch", "transformers", "peft", "hora"} and len(found["hora"]) == 64


def test_only_the_newest_entries_of_a_kind_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(memo, "KEEP", 3)
    folder = tmp_path / "memo" / "demo"
    for key in range(5):
        memo.remembered("demo", key, lambda key=key: key, cache_dir=tmp_path)
        for entry in folder.iterdir():  # older than the next write, whatever the file system's clock resolution
            os.utime(entry, (1e9 + key, 1e9 + key))
    assert len(list((tmp_path / "memo" / "demo").iterdir())) == 3
    compute, calls = counting(4)
    assert memo.remembered("demo", 4, compute, cache_dir=tmp_path) == 4 and calls == []  # the newest stayed
