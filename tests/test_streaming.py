"""The generated side streamed block by block: the same numbers as in memory, each
image decoded at most once per pass, cached packs read instead of encoded."""

import shutil

import torch
from helpers import phantoms

from pytest_gan_privacy import nearcopies
from pytest_gan_privacy.cache import TensorCache
from pytest_gan_privacy.encoders import PatchEncoder
from pytest_gan_privacy.features import Encoding, FeatureStream, encode_images, feature_packs
from pytest_gan_privacy.images import load_image_set
from pytest_gan_privacy.nearcopies import generated_side, robust_scan
from pytest_gan_privacy.similarity import TensorRows, scan_generated


class CountingEncoder(PatchEncoder):
    def __init__(self):
        super().__init__()
        self.encoded = 0

    def encode_batch(self, pixels):
        self.encoded += len(pixels)
        return super().encode_batch(pixels)


def test_the_near_copy_scan_does_not_depend_on_how_the_generated_side_is_chunked(monkeypatch):
    generated, candidates = generated_side(phantoms(37, 0)), phantoms(40, 1)
    whole = robust_scan(generated, candidates, block=4)
    monkeypatch.setattr(nearcopies, "CHUNK_BLOCKS", 2)  # chunks of 8 rows: 5 of them
    chunked = robust_scan(TensorRows(generated), candidates, block=4)
    for name in ("candidate_top_index", "generated_match"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name)), name
    # float32 similarities, each computed in a block of other rows: summed in another
    # order, they may differ in the last bit
    for name in ("candidate_top", "generated_best"):
        assert torch.allclose(getattr(whole, name), getattr(chunked, name), rtol=0, atol=1e-6)
    assert len(chunked.generated_best) == 37


def test_the_similarity_scan_reads_streamed_rows_as_it_reads_a_tensor():
    generated = torch.nn.functional.normalize(torch.randn(300, 16), dim=1)
    candidates = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
    small = 20 * 64  # blocks of 64 generated rows
    held = scan_generated(candidates, generated, max_block_floats=small)
    streamed = scan_generated(candidates, TensorRows(generated), max_block_floats=small)
    assert torch.equal(held.top_values, streamed.top_values)
    assert torch.equal(held.top_indices, streamed.top_indices)
    assert torch.equal(held.soft_votes, streamed.soft_votes)
    # and the same neighbours as the whole comparison at once
    assert torch.equal(held.top_indices, (candidates @ generated.T).topk(3, dim=1).indices)


def test_a_stream_reads_cached_packs_encodes_the_others_once_and_gives_the_same_rows(
    clean_release, tmp_path
):
    images = load_image_set(clean_release / "generated", "generated")
    expected = encode_images(images, PatchEncoder(), Encoding("cpu", workers=0))
    cache = TensorCache(tmp_path / "cache")
    cold = FeatureStream(images, CountingEncoder(), Encoding("cpu", 16, 0, cache=cache))
    assert torch.equal(torch.cat(list(cold.blocks(7))), expected)
    assert cold.encoder.encoded == len(images)
    # forget every third pack: a pass reads the others and encodes only those, in one
    # stream of batches that straddle packs
    packs = feature_packs(images, CountingEncoder(), "cpu")
    forgotten = [positions for i, (key, positions) in enumerate(packs) if i % 3 == 0]
    for i, (key, _) in enumerate(packs):
        if i % 3 == 0:
            cache._path("features", key).unlink()
    warm = FeatureStream(images, CountingEncoder(), Encoding("cpu", 16, 0, cache=cache))
    blocks = list(warm.blocks(11))
    assert {len(b) for b in blocks[:-1]} == {11}
    assert torch.equal(torch.cat(blocks), expected)
    assert warm.encoder.encoded == sum(map(len, forgotten))
    assert warm.seconds > 0
    hot = FeatureStream(images, CountingEncoder(), Encoding("cpu", 16, 0, cache=cache))
    assert torch.equal(torch.cat(list(hot.blocks(1000))), expected)
    assert hot.encoder.encoded == 0


def test_a_stream_leaves_out_unreadable_images_and_the_set_drops_them(clean_release, tmp_path):
    folder = tmp_path / "generated"
    shutil.copytree(clean_release / "generated", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    images = load_image_set(folder, "generated", skip_bad=True)
    n = len(images)
    stream = FeatureStream(images, PatchEncoder(), Encoding("cpu", 16, 0))
    rows = torch.cat(list(stream.blocks(10)))
    assert len(rows) == n - 1 == len(images)
    assert [p.name for p in images.skipped] == ["broken.png"]
