"""hora.cards: the one model-card writer, YAML front matter through a YAML library, and its reader."""

from __future__ import annotations

import yaml

from hora import cards


def test_render_then_read_round_trips(tmp_path):
    front = {"license": "apache-2.0", "tags": ["hora", "lora"], "base_model": "org/name"}
    path = cards.write(tmp_path, front, "# Title\n\nBody.")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n") and text.endswith("Body.\n") and "# Title" in text
    assert cards.read(tmp_path) == front


def test_values_that_look_like_yaml_stay_values(tmp_path):
    tricky = {"base_model": "x\n---\nlicense: stolen", "tags": ["a: b", "- c", "'quoted'", "ünïcode"]}
    cards.write(tmp_path, tricky, "body")
    assert cards.read(tmp_path) == tricky


def test_read_without_a_card_or_with_a_broken_one(tmp_path):
    assert cards.read(tmp_path) == {}
    (tmp_path / "README.md").write_text("# no front matter\n")
    assert cards.read(tmp_path) == {}
    (tmp_path / "README.md").write_text("---\nkey: [unclosed\n---\n# body\n")
    assert cards.read(tmp_path) == {}
    (tmp_path / "README.md").write_text("---\n- a list\n---\n")
    assert cards.read(tmp_path) == {}


def test_model_index_and_its_metrics():
    index = cards.model_index(
        "m",
        ("image-classification", "Image classification"),
        {"name": "d"},
        [cards.metric("accuracy", 0.123456, "acc")],
    )
    assert index[0]["results"][0]["metrics"] == [{"type": "accuracy", "value": 0.1235, "name": "acc"}]
    assert cards.card_metrics({"model-index": index}) == {"acc": 0.1235}
    assert yaml.safe_load(yaml.safe_dump(index)) == index


def test_table():
    assert cards.table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
