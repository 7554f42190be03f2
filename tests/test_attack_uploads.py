"""Attack: uploads that decode to gigabytes, and labels that are not what they look like.

A zip of a few KB holding one-bit PNGs of 6000x6000 stayed under the per-image and total pixel limits and took the
server from 0.6 to 4.5 GB: every image was kept decoded at full size, in RGB. Now the header is checked before
decoding, every image is reduced right after decoding (``DataLimits.max_image_side``), and the bytes kept are
budgeted (``max_decoded_bytes``). Labels ``1`` and ``"1"`` were merged silently, control characters accepted, an
unterminated quote reported as an empty label, and 10,000 classes broke the evaluation cap.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from PIL import Image

from hora.data import DataError, DataLimits, few_shot_split, load_data


def one_bit_png(side: int = 6000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (side, side), 0).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pixel_bomb(tmp_path_factory) -> Path:
    """Six 6000x6000 one-bit PNGs in two classes: about 1 KB zipped, 216 M pixels, 860 MB if kept as decoded."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    data = one_bit_png()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for label in ("a", "b"):
            for i in range(3):
                zf.writestr(f"{label}/{i}.png", data)
    assert path.stat().st_size < 4096
    return path


def _peak_growth_mib(call) -> tuple[float, object]:
    """``call()``'s result and how far this process's resident memory rose above where it started, sampled every
    5 ms while it ran (images are decoded by PIL in C, which tracemalloc does not see)."""
    process, peak, done = psutil.Process(), [0], threading.Event()
    start = process.memory_info().rss

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss - start)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = call()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], process.memory_info().rss - start) / 2**20, result


def test_a_few_kb_of_one_bit_pngs_stays_bounded_in_memory(pixel_bomb):
    grown, data = _peak_growth_mib(lambda: load_data(pixel_bomb))
    assert grown < 300, grown  # kept at full size in RGB, the same zip took about 900 MB
    assert len(data.images) == 6 and {im.size for im in data.images} == {(1000, 1000)}  # reduced on load


def test_the_header_is_checked_before_decoding(tmp_path):
    buf = io.BytesIO()
    Image.new("1", (9000, 5000), 0).save(buf, "PNG")  # 45 M pixels: over the 40 M limit per image
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/1.png", buf.getvalue())
        zf.writestr("b/1.png", buf.getvalue())
    start = time.perf_counter()
    with pytest.raises(DataError, match="more than 40,000,000 pixels"):
        load_data(archive)
    assert time.perf_counter() - start < 1


def test_the_bytes_kept_in_memory_are_budgeted(pixel_bomb):
    with pytest.raises(DataError, match=r"more than 5 MB decoded \(even reduced to 1000 pixels a side\)"):
        load_data(pixel_bomb, limits=DataLimits(max_image_side=1000, max_decoded_bytes=5 * 2**20))
    with pytest.raises(DataError, match="more than 100,000,000 pixels in all"):
        load_data(pixel_bomb, limits=DataLimits(max_total_pixels=100_000_000))


def test_a_single_image_loads_under_the_same_limits(tmp_path):
    from hora.data.images import load_image

    path = tmp_path / "one.png"
    path.write_bytes(one_bit_png(4000))
    image = load_image(path)
    assert image.mode == "RGB" and max(image.size) <= 1024


def _jsonl(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("first,second", [(1, "1"), (True, "true"), ("1", 1), (2.5, "2.5")])
def test_labels_that_differ_in_type_but_read_the_same_are_refused(tmp_path, first, second):
    records = [{"text": "a", "label": first}, {"text": "b", "label": "other"}, {"text": "c", "label": second}]
    with pytest.raises(DataError, match=r"line 3 has the label .* but line 1 has it as .*merged into one class"):
        load_data(_jsonl(tmp_path, records), task="text")


def test_numeric_labels_of_one_type_still_load(tmp_path):
    records = [{"text": t, "label": n} for t, n in (("a", 1), ("b", 2), ("c", 10))]
    assert load_data(_jsonl(tmp_path, records), task="text").classes == ["1", "2", "10"]


@pytest.mark.parametrize("label", ["bad\x00label", "tab\there", "esc\x1b[31m", "line\nbreak", "rtl\u202eevil", "\x7f"])
def test_control_characters_in_labels_are_refused(tmp_path, label):
    records = [{"text": "a", "label": label}, {"text": "b", "label": "fine"}]
    with pytest.raises(DataError, match="control character U\\+"):
        load_data(_jsonl(tmp_path, records), task="text")


def test_control_characters_in_class_folders_are_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    archive = tmp_path / "names.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/1.png", buf.getvalue())
        zf.writestr("bad\x01name/1.png", buf.getvalue())
    with pytest.raises(DataError, match="U\\+0001"):
        load_data(archive)


def test_an_unterminated_quote_is_reported_as_such(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('text,label\nhello,a\n"oops,b\nmore,c\nagain,a\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3 of quotes.csv opens a quote .* never closed"):
        load_data(path, task="text")
    path.write_text('text,label\n"a ""quoted"" word",a\nplain,b\n', encoding="utf-8")  # doubled quotes are fine
    assert load_data(path, task="text").texts[0] == 'a "quoted" word'


def test_the_evaluation_cap_holds_with_ten_thousand_classes():
    labels = [c for c in range(10_000) for _ in range(3)]
    split = few_shot_split(labels, shots=1, seed=0, max_eval=2048)
    assert len(split.eval) == 2048 and len(split.train) == 10_000
    assert not set(split.eval) & set(split.train)
    few = few_shot_split([c for c in range(4) for _ in range(10)], shots=2, seed=0, max_eval=8)
    assert sorted({few_labels // 10 for few_labels in few.eval}) == [0, 1, 2, 3]  # spread over the classes
