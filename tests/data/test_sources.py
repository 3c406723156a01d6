from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import DecodeReport, load_data
from pipeline.data.decode import content_id, decode_image
from pipeline.data.sources import iter_source
from pipeline.errors import DataError

from .trees import CLASSES, tar_tree, write_tree


def _records(source: Path | str) -> tuple[list, DecodeReport]:
    report = DecodeReport()
    return list(iter_source(str(source), report)), report


def test_tree_and_tarball_give_the_same_images(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", 3, test_per_class=2)
    from_tree, _ = _records(tree)
    from_tar, _ = _records(tar_tree(tree, tmp_path / "t.tar.gz"))
    key = lambda r: (r.split, r.label, r.name)  # noqa: E731
    assert sorted(map(key, from_tree)) == sorted(map(key, from_tar))
    assert len(from_tree) == len(CLASSES) * 5
    ids_tree = sorted(content_id(r.pixels) for r in from_tree)
    ids_tar = sorted(content_id(r.pixels) for r in from_tar)
    assert ids_tree == ids_tar


def test_official_python_archive(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    names = [b"airplane", b"automobile"]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    for key, n in (("data_batch_1", 6), ("test_batch", 4)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {b"data": data, b"labels": [i % 2 for i in range(n)],
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        (d / key).write_bytes(pickle.dumps(batch))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    sets = load_data(archive)
    assert len(sets["train"]) == 6 and len(sets["test"]) == 4
    assert sets["train"].classes == ["airplane", "automobile"]
    # channel-major rows of the archive become the same pixels as HWC images
    first = sets["train"].images[0]
    assert first.shape == (3, 32, 32)
    assert np.array_equal(first.numpy().reshape(-1), data_first_row(d))


def data_first_row(d: Path) -> np.ndarray:
    batch = pickle.loads((d / "data_batch_1").read_bytes())
    return np.asarray(batch[b"data"][0], dtype=np.uint8)


@pytest.mark.parametrize(
    "mode,size",
    [("L", (32, 32)), ("RGBA", (32, 32)), ("P", (32, 32)), ("RGB", (64, 48)), ("RGB", (20, 40)), ("I;16", (32, 32))],
)
def test_odd_images_become_32x32_rgb(mode: str, size: tuple[int, int]) -> None:
    img = Image.new("RGB", size, (200, 10, 30)).convert(mode)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    report = DecodeReport()
    pixels = decode_image(buf.getvalue(), "x.png", report)
    assert pixels is not None and pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert report.decoded == 1
    if size != (32, 32):
        assert report.resized == 1


def test_transparent_pixels_become_white() -> None:
    import io

    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    pixels = decode_image(buf.getvalue(), "x.png", DecodeReport())
    assert pixels is not None and (pixels == 255).all()


def test_grayscale_is_replicated_to_three_channels() -> None:
    import io

    img = Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) % 251, mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    pixels = decode_image(buf.getvalue(), "x.png", DecodeReport())
    assert pixels is not None
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.array_equal(pixels[..., 0], np.asarray(img))


def test_corrupt_and_non_image_files_are_counted_not_fatal(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", 2)
    (tree / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tree / "train" / "dog" / "notes.txt").write_text("hello")
    records, report = _records(tree)
    assert len(records) == 2 * len(CLASSES)
    assert len(report.corrupt) == 1 and report.corrupt[0].endswith("broken.jpg")
    assert len(report.not_images) == 1
    assert "1 corrupt skipped" in report.summary()


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "empty"),
        (lambda p: (p.parent.mkdir(exist_ok=True), p.write_bytes(b""), p)[2], "empty"),
        (lambda p: (p.write_text("hello"), p)[1], "not a folder or a .tar"),
    ],
)
def test_unusable_sources_raise_data_error(tmp_path: Path, setup, message: str) -> None:
    target = setup(tmp_path / "src")
    with pytest.raises(DataError, match=message):
        _records(target)


def test_unknown_layout_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "images" / "a.png")
    with pytest.raises(DataError, match="train/<class>"):
        _records(root)


def test_images_directly_under_train_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "train" / "a.png")
    with pytest.raises(DataError, match="class folder"):
        _records(root)


def test_class_without_images_is_rejected(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", 2)
    (tree / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match="train/empty_class has no readable images"):
        _records(tree)
    with pytest.raises(DataError, match="train/empty_class"):
        _records(tar_tree(tree, tmp_path / "t.tgz"))


def test_extreme_aspect_ratio_resamples_only_the_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    # 2 x 4096 (2048:1): the shorter side at 32 would be 32 x 65536 pixels; a 1 x 16M strip,
    # 32 x 512M. Only the centre square's source region may be resampled.
    ramp = np.linspace(0, 255, 4096)[:, None, None] * np.ones((1, 2, 3))
    img = Image.fromarray(ramp.round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        sizes.append(tuple(size))  # type: ignore[arg-type]
        return resize(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    pixels = decode_image(buf.getvalue(), "strip.png", DecodeReport())
    monkeypatch.undo()
    assert pixels is not None and pixels.shape == (32, 32, 3)
    assert max(w * h for w, h in sizes) <= 32 * 32
    # The same picture as the full resize and centre crop (which this size still allows).
    full = img.resize((32, 65536), Image.Resampling.BICUBIC, reducing_gap=3.0)
    top = (65536 - 32) // 2
    expected = np.asarray(full.crop((0, top, 32, top + 32)), dtype=int)
    assert np.abs(pixels.astype(int) - expected).max() <= 1
