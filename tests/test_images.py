import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_big_png
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


def test_a_20000_pixel_square_image_is_refused_by_name(tmp_path: Path):
    Image.new("L", (8, 8), 5).save(tmp_path / "good.png")
    write_big_png(tmp_path / "bomb.png", 20_000, 20_000)
    images = load_image_set(tmp_path, "generated")
    with pytest.raises(AuditInputError, match=r"bomb.png: too large .*down-sample it first"):
        list(iter_batches(images, 16, 1, batch_size=2, workers=0))


def test_a_large_image_is_down_sampled_in_little_memory(tmp_path: Path):
    """12000 x 12000 grey (144 M pixels, under the limit): decoded at its native size
    once (144 MB), box-reduced, never copied as floats at full size (that took 1.2 GB)."""

    ramp = bytes(x * 255 // 12_000 for x in range(12_000))
    big = write_big_png(tmp_path / "big.png", 12_000, 12_000, ramp)
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from pytest_gan_privacy.images import decode_image\n"
        "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "decode_image(Path(sys.argv[1]), 64, 3)\n"
        "before = rss()\n"
        "x = decode_image(Path(sys.argv[2]), 64, 3)\n"
        "print(rss() - before, float(x[:, :, 0].mean()), float(x[:, :, -1].mean()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "small.png"), str(big)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    growth_mb, left, right = map(float, out)
    assert growth_mb < 400, f"decoding took {growth_mb:.0f} MB more"
    assert left < 0.02 and right > 0.98  # the ramp survived the reduction


def test_links_are_followed_once_and_never_hang(tmp_path: Path):
    """Links to files and folders outside are followed (datasets kept in a store); a
    loop is searched once; a broken link and a pipe are bad files, named."""

    store = tmp_path / "store"
    (store / "more").mkdir(parents=True)
    Image.new("L", (8, 8), 10).save(store / "a.png")
    Image.new("L", (8, 8), 20).save(store / "more" / "b.png")
    folder = tmp_path / "generated"
    folder.mkdir()
    Image.new("L", (8, 8), 30).save(folder / "own.png")
    (folder / "linked.png").symlink_to(store / "a.png")
    (folder / "more").symlink_to(store / "more", target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (store / "back").symlink_to(folder, target_is_directory=True)
    images = load_image_set(folder, "generated")
    assert sorted(images.ids) == ["linked.png", "more/b.png", "own.png"]

    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    os.mkfifo(folder / "pipe.png")
    (folder / "self.png").symlink_to(folder / "self.png")
    with pytest.raises(AuditInputError) as err:
        load_image_set(folder, "generated")
    message = str(err.value)
    assert "3 of 6 generated images could not be read" in message
    assert "gone.png: cannot read it (a broken link" in message
    assert "pipe.png: cannot read it (not a regular file" in message
    assert "self.png" in message and "--skip-bad-images" in message

    images = load_image_set(folder, "generated", skip_bad=True)
    assert len(images) == 3
    assert sorted(p.name for p in images.skipped) == ["gone.png", "pipe.png", "self.png"]


def test_one_bad_image_among_thousands_is_named_or_skipped(tmp_path: Path):
    for i in range(2000):  # 2,000 distinct contents (copies would be counted once)
        pixels = np.full((4, 4), i % 256, np.uint8)
        pixels[0, 0] = i // 256
        Image.fromarray(pixels).save(tmp_path / f"{i:04d}.png")
    good = (tmp_path / "0007.png").read_bytes()
    (tmp_path / "0007.png").write_bytes(good[: len(good) // 2])
    images = load_image_set(tmp_path, "generated")
    with pytest.raises(AuditInputError, match=r"1 of 2000 generated images.*\n  .*0007.png: "):
        list(iter_batches(images, 4, 1, batch_size=256, workers=0))

    images = load_image_set(tmp_path, "generated", skip_bad=True)
    decoded = sum(len(i) for _, i in iter_batches(images, 4, 1, batch_size=256, workers=0))
    assert decoded == 1999
    assert [p.name for p in images.skipped] == ["0007.png"]
    assert "corrupt" in images.skipped[tmp_path / "0007.png"]


def test_every_image_unreadable_stops_even_when_skipping(tmp_path: Path):
    (tmp_path / "a.png").write_text("not an image")
    images = load_image_set(tmp_path, "used", skip_bad=True)
    with pytest.raises(AuditInputError, match="1 of 1 used images.*none is left to audit"):
        from pytest_gan_privacy.encoders import PixelEncoder
        from pytest_gan_privacy.features import Encoding, encode_images

        encode_images(images, PixelEncoder(8), Encoding("cpu", workers=0))


def test_a_decoding_process_that_dies_is_a_message_not_a_traceback(tmp_path: Path, monkeypatch):

    from pytest_gan_privacy import images as images_module

    Image.new("L", (8, 8), 5).save(tmp_path / "a.png")
    parent = os.getpid()

    def killed(*args):  # as if the out-of-memory killer struck the worker
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(images_module, "decode_image", killed)
    images = load_image_set(tmp_path, "generated")
    with pytest.raises(AuditInputError, match="a process decoding the generated images died"):
        list(iter_batches(images, 8, 1, batch_size=1, workers=1))
