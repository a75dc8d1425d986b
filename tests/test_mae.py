"""The masked autoencoder: it learns, masks as asked, is deterministic, and its weights
are cached so that an unchanged audit trains once."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import TINY_MAE
from timm.models.vision_transformer import VisionTransformer

from pytest_gan_privacy import mae
from pytest_gan_privacy.cache import TensorCache
from pytest_gan_privacy.checkpoints import load_state_dict
from pytest_gan_privacy.encoders import MAEEncoder
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.features import Encoding, encode_images
from pytest_gan_privacy.images import load_image_set, load_pixels
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.settings import AuditSettings

DEVICE = torch.device("cpu")


def _no_progress(stage, done, total):
    pass


@pytest.fixture(scope="module")
def generated(leaky_release):
    return load_image_set(leaky_release / "generated", "generated")


def test_masking_keeps_a_quarter_of_the_patches_of_each_image():
    noise = torch.rand(5, 16, generator=torch.Generator().manual_seed(0))
    ids_keep, ids_restore = mae.masking(noise, 0.75)
    assert ids_keep.shape == (5, 4)
    assert all(len(set(row.tolist())) == 4 for row in ids_keep)  # no patch kept twice
    assert torch.equal(noise.argsort(1).gather(1, ids_restore), torch.arange(16).expand(5, -1))
    model = mae.build_model(TINY_MAE, seed=0)
    errors = model.patch_errors(torch.rand(5, 1, 32, 32), noise)
    assert ((errors != 0).sum(1) == 12).all()  # only the masked patches are scored
    assert (errors.gather(1, ids_keep) == 0).all()


def test_training_lowers_the_loss(generated):
    pixels = load_pixels(generated, 32, workers=0)
    losses = []
    config = replace(TINY_MAE, epochs=8)
    mae.train(pixels, config, 0, DEVICE, progress=lambda epoch, loss: losses.append(loss))
    assert len(losses) == 8
    assert losses[-1] < 0.8 * losses[0], losses


def test_one_seed_gives_the_same_weights_another_seed_others(generated):
    pixels = load_pixels(generated, 32, workers=0)

    def weights(seed):
        return mae.train(pixels, TINY_MAE, seed, DEVICE).state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


@pytest.fixture
def trainings(monkeypatch) -> list[int]:
    """Counts the MAE trainings."""
    calls = []
    train = mae.train

    def counted(*args, **kwargs):
        calls.append(1)
        return train(*args, **kwargs)

    monkeypatch.setattr(mae, "train", counted)
    return calls


def test_cached_weights_give_identical_features_without_training(
    generated, tmp_path: Path, trainings
):
    cache = TensorCache(tmp_path)
    stages = []
    trained = MAEEncoder(TINY_MAE, "cpu", cache=cache, workers=0)
    trained.fit(generated, DEVICE, lambda stage, done, total: stages.append((stage, done)))
    assert [done for _, done in stages] == [0, 1, 2, 3]  # a line per epoch, with the loss
    assert "loss" in stages[-1][0] and len(trainings) == 1
    features = encode_images(generated, trained, Encoding(DEVICE, workers=0))

    reloaded = MAEEncoder(TINY_MAE, "cpu", cache=cache, workers=0)
    reloaded.fit(generated, DEVICE, _no_progress)
    assert len(trainings) == 1
    assert reloaded.cache_identity() == trained.cache_identity()
    assert torch.equal(encode_images(generated, reloaded, Encoding(DEVICE, workers=0)), features)


def test_a_corrupt_weights_entry_is_retrained(generated, tmp_path: Path, trainings):
    cache = TensorCache(tmp_path)
    MAEEncoder(TINY_MAE, "cpu", cache=cache, workers=0).fit(generated, DEVICE, _no_progress)
    (entry,) = (tmp_path / "weights").rglob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:-8] + b"garbage!")
    again = MAEEncoder(TINY_MAE, "cpu", cache=cache, workers=0)
    again.fit(generated, DEVICE, _no_progress)
    assert len(trainings) == 2 and cache.rejected == 1


def test_the_audit_trains_once_and_reports_the_mae_attacks_with_their_cost(
    leaky_release, tmp_path: Path, trainings
):
    def audit():
        return run_audit(
            AuditSettings(
                generated=leaky_release / "generated",
                used=leaky_release / "real" / "used",
                not_used=leaky_release / "real" / "not_used",
                workers=0,
                cache_dir=tmp_path,
            )
        )

    first, second = audit(), audit()
    assert len(trainings) == 1 and second.cache["misses"] == 0
    mae = {"mae nearest-neighbour", "mae calibrated", "mae retrieval"}
    assert mae <= set(first.attacks) and "mae reconstruction" not in first.attacks
    # an attack's cost is its space's: the training, encoding and scoring it needs
    fit = first.timings["fit mae"]
    assert all(first.attack_seconds(name) >= fit > 0 for name in mae)
    assert first.attack_seconds("best per fold") >= first.attack_seconds("mae retrieval")
    for name, attack in first.attacks.items():
        assert attack.metrics.auc == second.attacks[name].metrics.auc, name


def test_max_images_trains_on_the_smallest_content_hashes(generated, tmp_path: Path):
    encoder = MAEEncoder(replace(TINY_MAE, max_images=100), "cpu", workers=0)
    encoder.fit(generated, DEVICE, _no_progress)
    assert encoder.trained_on == 100 and len(generated) == 150
    # the same weights as training on exactly the 100 images with the smallest hashes
    by_hash = sorted(range(150), key=generated.hashes.__getitem__)
    alone = MAEEncoder(TINY_MAE, "cpu", workers=0)
    alone.fit(generated.subset(by_hash[:100]), DEVICE, _no_progress)
    assert alone.weights_sha256 == encoder.weights_sha256
    other = MAEEncoder(TINY_MAE, "cpu", workers=0)
    other.fit(generated.subset(by_hash[-100:]), DEVICE, _no_progress)
    assert other.weights_sha256 != encoder.weights_sha256


def _tiny_vit(in_chans: int = 3) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, in_chans=in_chans, embed_dim=64, depth=2, num_heads=1,
        num_classes=0,
    )  # fmt: skip


def test_pretrained_mae_checkpoint_initialises_the_encoder(tmp_path: Path, generated):
    vit = _tiny_vit()
    state = {f"module.{k}": v for k, v in vit.state_dict().items()}
    state["decoder_embed.weight"] = torch.zeros(16, 64)  # the official format has a decoder
    state["mask_token"] = torch.zeros(1, 1, 16)
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": state, "epoch": 1}, path)

    config, init = mae.pretrained_config(load_state_dict(path), TINY_MAE, str(path))
    assert (config.embed_dim, config.depth, config.patch_size, config.img_size) == (64, 2, 8, 32)
    model = mae.build_model(config, 0, init)
    weights = vit.state_dict()
    assert torch.equal(model.blocks[1].mlp.fc2.weight, weights["blocks.1.mlp.fc2.weight"])
    grey_kernel = weights["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.patch_embed.proj.weight, grey_kernel)
    assert not torch.equal(mae.build_model(config, 0).blocks[1].mlp.fc2.weight, grey_kernel)

    encoder = MAEEncoder(TINY_MAE, "cpu", checkpoint=path, workers=0)
    encoder.fit(generated, DEVICE, _no_progress)  # loads the checkpoint, fine-tunes from there
    assert encoder.config == config
    assert encode_images(generated, encoder, Encoding(DEVICE, workers=0)).shape == (150, 16 * 64)
    assert encoder.describe()["initialised_from"] == str(path)


def test_a_checkpoint_without_a_vit_encoder_is_refused(tmp_path: Path, generated):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, path)
    encoder = MAEEncoder(TINY_MAE, "cpu", checkpoint=path)  # configures only
    with pytest.raises(AuditInputError, match="holds no ViT encoder"):
        encoder.fit(generated, DEVICE, _no_progress)


def test_sincos_position_embedding_is_the_papers():
    """Row 0 of the 2 x 2 grid's second patch (column 1): the column in the first half."""
    emb = mae.sincos_pos_embed(8, 2)
    omega = 1.0 / 10000 ** (torch.arange(2) / 2.0)
    column_1 = torch.cat([torch.sin(omega), torch.cos(omega)])
    row_0 = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(emb[1], torch.cat([column_1, row_0]))
