from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.images import decode_image, iter_batches, load_image_set


def _png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_8_and_16_bit_grey_decode_to_the_same_values():
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    eight = Image.fromarray((ramp * 255).round().astype(np.uint8), mode="L")
    sixteen = Image.fromarray((ramp * 65535).round().astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    a = decode_image(_png_bytes(eight), 32, 1)
    b = decode_image(_png_bytes(sixteen), 32, 1)
    assert a.shape == b.shape == (1, 32, 32)
    assert (a - b).abs().max() < 1 / 255


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA", "1"])
def test_colour_modes_become_grey_or_rgb(mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    grey = decode_image(_png_bytes(img, fmt), 16, 1)
    rgb = decode_image(_png_bytes(img, fmt), 16, 3)
    assert grey.shape == (1, 16, 16) and rgb.shape == (3, 16, 16)
    assert 0 <= float(grey.min()) <= float(grey.max()) <= 1


def test_grey_is_repeated_for_three_channels():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    rgb = decode_image(_png_bytes(img), 8, 3)
    assert (rgb[0] == rgb[1]).all() and (rgb[1] == rgb[2]).all()


def test_images_are_found_recursively_and_kept_in_content_order(tmp_path: Path):
    for i, sub in enumerate(["a", "b/c", "b/c/d"]):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), i * 40).save(tmp_path / sub / f"z{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_image_set(tmp_path, "generated")
    assert len(images) == 3
    assert images.hashes == sorted(images.hashes)
    assert sorted(images.ids) == ["a/z0.png", "b/c/d/z2.png", "b/c/z1.png"]


def test_missing_folder_names_it_and_the_option(tmp_path: Path):
    with pytest.raises(AuditInputError, match=r"not_used folder .*nope does not exist.*--not-used"):
        load_image_set(tmp_path / "nope", "not_used")


def test_folder_without_images_says_what_it_found(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(AuditInputError, match="only 1 non-image files"):
        load_image_set(tmp_path, "used")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AuditInputError, match="has no files"):
        load_image_set(empty, "used")


def test_unreadable_images_are_all_listed_by_name(tmp_path: Path):
    Image.new("L", (8, 8), 5).save(tmp_path / "good.png")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    truncated = _png_bytes(Image.effect_noise((64, 64), 50))
    (tmp_path / "cut.png").write_bytes(truncated[: len(truncated) // 2])
    Image.new("L", (1, 1)).save(tmp_path / "dot.png")
    images = load_image_set(tmp_path, "generated")
    with pytest.raises(AuditInputError) as err:
        list(iter_batches(images, 16, 1, batch_size=2, workers=0))
    message = str(err.value)
    assert "4 of 5 generated images could not be read" in message
    for name in ("text.png", "empty.png", "cut.png", "dot.png"):
        assert name in message
    assert "good.png" not in message
