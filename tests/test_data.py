"""hora.data: uploads loaded into datasets, every refusal of a hostile or broken upload, splits and batches."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hora.data import (
    DataError,
    DataLimits,
    FewShotSplit,
    ImageClassificationData,
    LanguageModelingData,
    TextClassificationData,
    few_shot_split,
    image_batch,
    lm_chunks,
    load_data,
    load_image_classification,
    load_language_modeling,
    load_text_classification,
)


def image_bytes(mode: str = "RGB", size=(8, 6), color=None, fmt: str = "PNG") -> bytes:
    img = Image.new(mode, size) if color is None else Image.new(mode, size, color)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def write_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    return path


def write_tree(root: Path, entries: dict[str, bytes]) -> Path:
    for name, data in entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def pets(n: int = 3) -> dict[str, bytes]:
    """Two classes of small images: red cats (PNG) and blue dogs (JPEG)."""
    files = {f"cat/{i:03d}.png": image_bytes(color=(255, 0, 0)) for i in range(n)}
    files |= {f"dog/{i:03d}.jpg": image_bytes(color=(0, 0, 255), fmt="JPEG") for i in range(n)}
    return files


def refused(match: str, fn, *args, **kwargs) -> str:
    """Call fn expecting a DataError whose message contains ``match``; return the message."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert match in str(info.value), str(info.value)
    return str(info.value)


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# --------------------------------------------------------------------------------------------- image uploads


def test_zip_of_class_folders(tmp_path):
    junk = {"__MACOSX/cat/._000.png": b"\0\1", "cat/.DS_Store": b"x", "dog/Thumbs.db": b"x", ".hidden": b"x"}
    upload = write_zip(tmp_path / "pets.zip", pets() | junk)
    before = files_under(tmp_path)
    data = load_image_classification(upload)
    assert isinstance(data, ImageClassificationData)
    assert data.classes == ["cat", "dog"]
    assert data.labels == [0, 0, 0, 1, 1, 1]
    assert data.names == ["cat/000.png", "cat/001.png", "cat/002.png", "dog/000.jpg", "dog/001.jpg", "dog/002.jpg"]
    assert all(img.mode == "RGB" and img.size == (8, 6) for img in data.images)
    assert data.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert files_under(tmp_path) == before  # nothing extracted


def test_zip_wrapper_folder_is_stripped(tmp_path):
    upload = write_zip(tmp_path / "pets.zip", {f"my pets/{k}": v for k, v in pets(2).items()} | {"my pets/": b""})
    data = load_image_classification(upload)
    assert data.classes == ["cat", "dog"]
    assert data.names[0] == "cat/000.png"


def test_folder_of_class_folders_with_unicode_names(tmp_path):
    root = write_tree(tmp_path / "up", {"猫/a.png": image_bytes(), "cafe\u0301/b.png": image_bytes()})  # NFD é
    data = load_image_classification(root)
    assert data.classes == ["café", "猫"]  # NFC, as typed
    assert data.labels == [0, 1]


def test_csv_with_paths(tmp_path):
    write_tree(tmp_path, {"imgs/a.png": image_bytes(), "imgs/sub/b.jpg": image_bytes(fmt="JPEG")})
    (tmp_path / "labels.csv").write_text("path,label\nimgs/a.png,猫\nimgs/sub/b.jpg, café \n", encoding="utf-8")
    data = load_image_classification(tmp_path / "labels.csv")
    assert data.classes == ["café", "猫"]
    assert data.labels == [1, 0]
    assert data.names == ["imgs/a.png", "imgs/sub/b.jpg"]


ODD_IMAGES = {
    "grey.png": (Image.new("L", (5, 4), 77), (77, 77, 77)),
    "palette.png": (
        Image.new("RGB", (5, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
        (10, 200, 30),
    ),
    "clear.png": (Image.new("RGBA", (5, 4), (255, 0, 0, 0)), (255, 255, 255)),  # alpha 0 -> white
    "half.png": (Image.new("RGBA", (5, 4), (0, 0, 0, 128)), (127, 127, 127)),
    "deep.png": (Image.new("I;16", (5, 4), 257 * 100), (100, 100, 100)),  # 16-bit, scaled not clipped
    "float.tif": (Image.new("F", (5, 4), 1.0), (255, 255, 255)),
    "ink.jpg": (Image.new("CMYK", (5, 4), (0, 0, 0, 0)), None),
    "dot.png": (Image.new("RGB", (1, 1), (1, 2, 3)), (1, 2, 3)),
    "strip.png": (Image.new("RGB", (3000, 20), (4, 5, 6)), (4, 5, 6)),
}


def test_odd_images_load_as_rgb_and_batch(tmp_path):
    entries = {}
    for name, (img, _) in ODD_IMAGES.items():
        buf = io.BytesIO()
        img.save(buf, {"png": "PNG", "tif": "TIFF", "jpg": "JPEG"}[name.rsplit(".", 1)[1]])
        entries[f"odd/{name}"] = buf.getvalue()
    entries["plain/x.png"] = image_bytes()
    data = load_image_classification(write_tree(tmp_path / "up", entries))
    for name, img in zip(data.names, data.images):
        original, pixel = ODD_IMAGES.get(name.split("/")[1], (img, None))
        # kept at most DataLimits.max_image_side (1024) a side: the 3000-pixel strip is reduced 3x on load
        expected = original.size if max(original.size) <= 1024 else (1000, 7)
        assert img.mode == "RGB" and img.size == expected, name
        if pixel is not None:
            assert img.getpixel((0, 0)) == pytest.approx(pixel, abs=1), name
    batch = image_batch(data.images, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert batch.shape == (len(entries), 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1


def test_image_batch_normalises_per_channel():
    images = [Image.new("RGB", (7, 5), (255, 0, 51)), Image.new("L", (2, 9), 255)]
    batch = image_batch(images, 4, mean=(0.5, 0.5, 0.2), std=(0.5, 0.25, 0.1))
    assert batch.shape == (2, 3, 4, 4)
    assert torch.allclose(batch[0, :, 0, 0], torch.tensor([1.0, -2.0, 0.0]), atol=1e-6)
    assert torch.allclose(
        batch[1], ((1 - torch.tensor([0.5, 0.5, 0.2])) / torch.tensor([0.5, 0.25, 0.1])).view(3, 1, 1)
    )
    assert image_batch([], 4, (0, 0, 0), (1, 1, 1)).shape == (0, 3, 4, 4)


# ---------------------------------------------------------------------------------------------- text uploads


def test_text_csv_utf8_with_bom_and_unicode_labels(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\n"Great, really",猫\nBad,café\nOk,猫\n', encoding="utf-8-sig")
    data = load_text_classification(path)
    assert isinstance(data, TextClassificationData)
    assert data.texts == ["Great, really", "Bad", "Ok"]
    assert data.classes == ["café", "猫"]
    assert data.labels == [1, 0, 1]


def test_text_csv_in_cp1252(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("phrase;étiquette\nÇa coûte 5 €;café\nNon;thé\n".encode("cp1252"))  # ';' as French Excel
    data = load_text_classification(path, text_column="phrase", label_column="étiquette")
    assert data.texts == ["Ça coûte 5 €", "Non"]
    assert data.classes == ["café", "thé"]


def test_text_jsonl_with_numeric_labels(tmp_path):
    lines = [{"text": f"t{i}", "label": i % 11} for i in range(22)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(map(json.dumps, lines)) + "\n\n", encoding="utf-8")
    data = load_text_classification(path)
    assert data.classes == [str(i) for i in range(11)]  # numeric order: "10" after "9"
    assert data.labels == [i % 11 for i in range(22)]


def test_language_modeling_sources(tmp_path):
    (tmp_path / "book.txt").write_text("Once upon a time.\nThe end.\n", encoding="utf-8")
    assert load_language_modeling(tmp_path / "book.txt").texts == ["Once upon a time.\nThe end.\n"]
    (tmp_path / "docs.jsonl").write_text('{"body": "a\u2028b"}\n{"body": "c"}\n', encoding="utf-8")
    assert load_language_modeling(tmp_path / "docs.jsonl", text_field="body").texts == ["a\u2028b", "c"]
    write_zip(tmp_path / "corpus.zip", {"corpus/b.txt": b"second", "corpus/a.txt": b"first", "__MACOSX/x": b""})
    assert load_language_modeling(tmp_path / "corpus.zip").texts == ["first", "second"]
    folder = write_tree(tmp_path / "corpus", {"a.txt": b"first", "sub/b.txt": "zweite Übung".encode()})
    data = load_language_modeling(folder)
    assert isinstance(data, LanguageModelingData) and data.texts == ["first", "zweite Übung"]


def test_load_data_detects_the_task(tmp_path):
    write_zip(tmp_path / "pets.zip", pets(2))
    write_tree(tmp_path / "imgs", pets(2))
    (tmp_path / "imgs.csv").write_text("path,label\nimgs/cat/000.png,cat\nimgs/dog/000.jpg,dog\n")
    (tmp_path / "cls.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "cls.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    (tmp_path / "lm.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "lm.txt").write_text("words")
    expected = {
        "pets.zip": ImageClassificationData,
        "imgs": ImageClassificationData,
        "imgs.csv": ImageClassificationData,
        "cls.csv": TextClassificationData,
        "cls.jsonl": TextClassificationData,
        "lm.jsonl": LanguageModelingData,
        "lm.txt": LanguageModelingData,
    }
    for name, kind in expected.items():
        assert isinstance(load_data(tmp_path / name), kind), name
    assert isinstance(load_data(tmp_path / "cls.jsonl", task="lm"), LanguageModelingData)
    (tmp_path / "renamed.csv").write_text("sentence,y\na,x\nb,y\n")
    assert load_data(tmp_path / "renamed.csv", text_column="sentence", label_column="y").classes == ["x", "y"]
    with pytest.raises(TypeError, match="colum"):
        load_data(tmp_path / "lm.txt", colum="text")


# ---------------------------------------------------------------------------------- refusals: zip and folder


@pytest.mark.parametrize(
    "entry,reason",
    [
        ("/etc/cat/evil.png", "absolute path"),
        ("\\cat\\evil.png", "absolute path"),
        ("C:/cat/evil.png", "drive letter"),
        ("cat/../../evil.png", "'..'"),
        ("cat\\..\\..\\evil.png", "'..'"),
    ],
)
def test_zip_entry_escaping_the_upload_is_refused(tmp_path, entry, reason):
    upload = write_zip(tmp_path / "up.zip", pets() | {entry: image_bytes()})
    before = files_under(tmp_path.parent)
    message = refused(reason, load_image_classification, upload)
    assert repr(entry) in message and "up.zip" in message
    assert files_under(tmp_path.parent) == before


def test_zip_symlink_entry_is_refused(tmp_path):
    upload = tmp_path / "up.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for name, data in pets().items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("cat/passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    refused("'cat/passwd.png' is a symbolic link", load_image_classification, upload)


def test_password_protected_zip_entry_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets())
    raw = bytearray(upload.read_bytes())
    central = raw.index(b"PK\x01\x02")  # first central-directory record: cat/000.png
    raw[central + 8] |= 0x1  # the "encrypted" bit of its flags
    upload.write_bytes(bytes(raw))
    refused("cat/000.png in up.zip is password-protected", load_image_classification, upload)


@pytest.mark.parametrize("linked", ["file", "folder"])
def test_symlink_in_folder_is_refused(tmp_path, linked):
    outside = write_tree(tmp_path / "outside", {"secret.png": image_bytes()})
    root = write_tree(tmp_path / "up", pets())
    if linked == "file":
        os.symlink(outside / "secret.png", root / "cat" / "secret.png")
        refused("cat/secret.png in up is a symbolic link", load_image_classification, root)
    else:
        os.symlink(outside, root / "bird")
        refused("bird in up is a symbolic link", load_image_classification, root)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_file_in_folder_is_refused(tmp_path):
    root = write_tree(tmp_path / "up", pets())
    os.mkfifo(root / "cat" / "pipe.png")
    refused("cat/pipe.png in up is not a regular file", load_image_classification, root)


def test_too_many_entries_is_refused(tmp_path):
    limits = DataLimits(max_files=5)
    refused("has 6 entries; the limit is 5", load_image_classification, write_zip(tmp_path / "up.zip", pets()), limits)
    refused("more than 5 files", load_image_classification, write_tree(tmp_path / "up", pets()), limits)


def test_too_many_total_bytes_is_refused(tmp_path):
    limits = DataLimits(max_total_bytes=len(image_bytes()) * 4)
    refused("unpacks to", load_image_classification, write_zip(tmp_path / "up.zip", pets()), limits)
    refused("holds more than", load_image_classification, write_tree(tmp_path / "up", pets()), limits)


def test_zip_entry_lying_about_its_size_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets(), compression=zipfile.ZIP_STORED)
    raw = bytearray(upload.read_bytes())
    central = raw.index(b"PK\x01\x02")  # first central-directory record: cat/000.png
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")  # declared uncompressed size: 10 bytes
    upload.write_bytes(bytes(raw))
    refused("cat/000.png in up.zip could not be unpacked", load_image_classification, upload)


def test_zip_bomb_entry_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets() | {"cat/bomb.png": bytes(4 * 2**20)})
    refused("cat/bomb.png in up.zip expands", load_image_classification, upload)


def test_zip_bomb_archive_is_refused(tmp_path):
    # each entry is under the per-entry floor, together they expand ~1000x
    upload = write_zip(tmp_path / "up.zip", pets() | {f"cat/z{i}.png": bytes(200_000) for i in range(20)})
    message = refused("up.zip expands", load_image_classification, upload)
    assert "zip bomb" in message


def test_file_over_max_file_bytes_is_refused(tmp_path):
    big = {"cat/big.png": image_bytes(size=(64, 64), color=(1, 2, 3), fmt="BMP")}  # 12 KB
    limits = DataLimits(max_file_bytes=4096)
    refused(
        "cat/big.png in up.zip is 12.1 KB",
        load_image_classification,
        write_zip(tmp_path / "up.zip", pets() | big),
        limits,
    )
    refused(
        "cat/big.png in up is 12.1 KB", load_image_classification, write_tree(tmp_path / "up", pets() | big), limits
    )
    (tmp_path / "big.csv").write_text("text,label\n" + "a,b\n" * 2000)
    refused("big.csv is larger than 4.0 KB", load_text_classification, tmp_path / "big.csv", limits=limits)


@pytest.mark.parametrize(
    "content", [b"this is not a picture", image_bytes(size=(40, 40), color=(9, 9, 9))[:60]], ids=["text", "truncated"]
)
def test_undecodable_image_is_refused(tmp_path, content):
    upload = write_zip(tmp_path / "up.zip", pets() | {"dog/broken.png": content})
    refused("dog/broken.png in up.zip is not a readable image", load_image_classification, upload)


def test_image_in_a_format_outside_the_allowed_plugins_is_refused(tmp_path):
    # PIL reads PPM (and would run Ghostscript for EPS); only PNG, JPEG, BMP, GIF, WebP and TIFF parsers are used.
    upload = write_zip(tmp_path / "up.zip", pets() | {"dog/x.png": image_bytes(fmt="PPM")})
    refused("dog/x.png in up.zip is not a readable image", load_image_classification, upload)


def test_image_over_max_image_pixels_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets() | {"dog/huge.png": image_bytes(size=(100, 100))})
    pil_limit = Image.MAX_IMAGE_PIXELS
    limits = DataLimits(max_image_pixels=5_000)
    refused("dog/huge.png in up.zip has more than 5,000 pixels", load_image_classification, upload, limits)
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # set for the load only


def test_images_over_max_total_pixels_are_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets())
    refused("more than 200 pixels in all", load_image_classification, upload, DataLimits(max_total_pixels=200))


def test_only_one_class_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", {k: v for k, v in pets().items() if k.startswith("cat/")})
    refused("only one class ('cat')", load_image_classification, upload)
    (tmp_path / "one.csv").write_text("text,label\na,pos\nb,pos\n")
    refused("only one class ('pos')", load_text_classification, tmp_path / "one.csv")


def test_class_folder_without_images_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets() | {"bird/": b"", "fish/.DS_Store": b"x"})
    refused("'bird', 'fish' have no images", load_image_classification, upload)
    root = write_tree(tmp_path / "up", pets())
    (root / "bird").mkdir()
    refused("'bird' have no images", load_image_classification, root)


def test_empty_files_are_refused(tmp_path):
    refused(
        "cat/empty.png in up.zip is empty",
        load_image_classification,
        write_zip(tmp_path / "up.zip", pets() | {"cat/empty.png": b""}),
    )
    (tmp_path / "empty.txt").write_text("  \n")
    refused("empty.txt is empty", load_language_modeling, tmp_path / "empty.txt")
    (tmp_path / "empty.csv").write_bytes(b"")
    refused("empty.csv is empty", load_text_classification, tmp_path / "empty.csv")


def test_empty_dataset_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", {"__MACOSX/._a.png": b"x", ".DS_Store": b"x"})
    refused("up.zip has no images", load_image_classification, upload)
    (tmp_path / "header.csv").write_text("text,label\n,\n")
    refused("header.csv has no rows", load_text_classification, tmp_path / "header.csv")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    refused("blank.jsonl is empty", load_language_modeling, tmp_path / "blank.jsonl")


def test_image_outside_a_class_folder_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets() | {"stray.png": image_bytes(), "README.md": b"ignored"})
    refused("stray.png in up.zip is not inside a class folder", load_image_classification, upload)


def test_non_image_in_a_class_folder_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", pets() | {"cat/notes.docx": b"x"})
    message = refused("cat/notes.docx in up.zip is not an image", load_image_classification, upload)
    assert ".png" in message and ".jpg" in message


# ------------------------------------------------------------------------------------ refusals: CSV and JSONL


@pytest.mark.parametrize(
    "path,reason",
    [("../outside.png", "'..'"), ("/etc/outside.png", "absolute path"), ("C:\\outside.png", "drive letter")],
)
def test_image_csv_path_escaping_its_folder_is_refused(tmp_path, path, reason):
    write_tree(tmp_path, {"outside.png": image_bytes(), "up/a.png": image_bytes()})
    (tmp_path / "up" / "labels.csv").write_text(f"path,label\na.png,x\n{path},y\n")
    message = refused(reason, load_image_classification, tmp_path / "up" / "labels.csv")
    assert "line 3 of labels.csv" in message


def test_image_csv_path_through_a_symlink_is_refused(tmp_path):
    write_tree(tmp_path, {"outside/b.png": image_bytes(), "up/a.png": image_bytes()})
    os.symlink(tmp_path / "outside", tmp_path / "up" / "linked")
    (tmp_path / "up" / "labels.csv").write_text("path,label\na.png,x\nlinked/b.png,y\n")
    refused("'linked/b.png' goes through a symbolic link", load_image_classification, tmp_path / "up" / "labels.csv")


def test_image_csv_missing_file_is_refused(tmp_path):
    write_tree(tmp_path, {"a.png": image_bytes()})
    (tmp_path / "labels.csv").write_text("path,label\na.png,x\nb.png,y\n")
    refused("b.png (listed in labels.csv) does not exist", load_image_classification, tmp_path / "labels.csv")


def test_csv_missing_column_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("review,sentiment\ngood,pos\n")
    message = refused("data.csv has no 'text' or 'label' column", load_text_classification, tmp_path / "data.csv")
    assert "columns found: 'review', 'sentiment'" in message
    (tmp_path / "imgs.csv").write_text("file,label\na.png,x\n")
    refused("no 'path' column; columns found: 'file', 'label'", load_image_classification, tmp_path / "imgs.csv")


def test_csv_row_with_empty_label_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("text,label\ngood,pos\nbad,\nmeh,neg\n")
    refused("line 3 of data.csv has an empty label ('label')", load_text_classification, tmp_path / "data.csv")
    write_tree(tmp_path, {"a.png": image_bytes()})
    (tmp_path / "imgs.csv").write_text("path,label\na.png, \n")
    refused("line 2 of imgs.csv (a.png) has an empty label", load_image_classification, tmp_path / "imgs.csv")


def test_jsonl_invalid_line_is_refused(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    refused("line 3 of data.jsonl is not valid JSON", load_text_classification, tmp_path / "data.jsonl")
    (tmp_path / "list.jsonl").write_text('["a", "x"]\n')
    refused("line 1 of list.jsonl is not a JSON object", load_text_classification, tmp_path / "list.jsonl")


def test_jsonl_missing_field_is_refused(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    message = refused("line 2 of data.jsonl has no 'text' field", load_text_classification, tmp_path / "data.jsonl")
    assert "fields found: 'body', 'label'" in message
    (tmp_path / "lm.jsonl").write_text('{"content": "words"}\n')
    refused("no 'text' field", load_language_modeling, tmp_path / "lm.jsonl")


def test_text_over_max_text_chars_is_refused(tmp_path):
    limits = DataLimits(max_text_chars=100)
    (tmp_path / "long.txt").write_text("x" * 101)
    refused("long.txt holds more than 100 characters", load_language_modeling, tmp_path / "long.txt", limits=limits)
    (tmp_path / "long.csv").write_text("text,label\n" + "".join(f"{'y' * 30},{i % 2}\n" for i in range(4)))
    refused("long.csv holds more than 100", load_text_classification, tmp_path / "long.csv", limits=limits)
    write_tree(tmp_path / "corpus", {f"{i}.txt": b"z" * 60 for i in range(3)})
    refused("corpus holds more than 100", load_language_modeling, tmp_path / "corpus", limits=limits)


def test_unknown_file_type_is_refused(tmp_path):
    (tmp_path / "data.rar").write_bytes(b"Rar!")
    message = refused("data.rar: unsupported file type '.rar'", load_image_classification, tmp_path / "data.rar")
    assert ".zip" in message and ".csv" in message
    refused("Accepted: .zip or folder", load_data, tmp_path / "data.rar")
    refused("upload a .csv or .jsonl", load_text_classification, tmp_path / "data.rar")
    refused("upload a .txt file", load_language_modeling, tmp_path / "data.rar")
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    refused("fake.zip is not a valid zip file", load_image_classification, tmp_path / "fake.zip")
    refused("does not exist", load_data, tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------- splits and chunks


def test_few_shot_split_is_stratified_reproducible_and_disjoint():
    labels = [i % 3 for i in range(30)] + [3] * 4
    split = few_shot_split(labels, shots=2, seed=7)
    assert split == few_shot_split(labels, shots=2, seed=7)
    assert split.train == sorted(split.train) and split.eval == sorted(split.eval)
    assert not set(split.train) & set(split.eval)
    assert sorted(split.train + split.eval) == list(range(len(labels)))
    assert np.bincount([labels[i] for i in split.train]).tolist() == [2, 2, 2, 2]
    assert few_shot_split(labels, shots=2, seed=8).train != split.train
    # eval_per_class caps the held-out examples of each class
    capped = few_shot_split(labels, shots=2, seed=7, eval_per_class=1)
    assert np.bincount([labels[i] for i in capped.eval]).tolist() == [1, 1, 1, 1]
    assert capped.train == split.train and set(capped.eval) <= set(split.eval)
    # recorded as JSON, and reproduced exactly
    record = json.loads(json.dumps(split.to_dict()))
    assert record == {"train": split.train, "eval": split.eval, "shots": 2, "seed": 7}
    assert FewShotSplit.from_dict(record) == split
    assert few_shot_split(np.array(labels), shots=2, seed=7) == split


def test_few_shot_split_refusals():
    message = refused("needs at least 4 examples per class", few_shot_split, [0] * 10 + [1] * 3, shots=3, seed=0)
    assert "class 1 has 3" in message and "class 0" not in message
    refused("shots must be at least 1", few_shot_split, [0, 1], shots=0, seed=0)
    refused("no examples", few_shot_split, [], shots=1, seed=0)


def test_lm_chunks_shapes():
    ids = list(range(10))
    chunks = lm_chunks(ids, 4)
    assert chunks.dtype == torch.int64 and chunks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert lm_chunks(ids, 4, stride=2).shape == (4, 4)
    assert lm_chunks(torch.arange(4), 4).shape == (1, 4)
    refused("only 3 tokens", lm_chunks, [1, 2, 3], 4)
    refused("at least 1", lm_chunks, ids, 4, stride=0)
