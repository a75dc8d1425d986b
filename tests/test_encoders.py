"""The timm ViT encoder loads local checkpoints, safely, in the common formats."""

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from pytest_gan_privacy.checkpoints import load_state_dict
from pytest_gan_privacy.encoders import LEARNED, PixelEncoder, TimmViTEncoder
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.runtime import no_progress
from pytest_gan_privacy.settings import Features

MODEL = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def tiny_vit_state() -> dict:
    torch.manual_seed(0)
    return timm.create_model(MODEL, pretrained=False, num_classes=0).state_dict()


def _loaded(model: str, path: Path) -> TimmViTEncoder:
    """A ViT encoder with its checkpoint loaded (fit loads it; it learns nothing)."""
    encoder = TimmViTEncoder(model, path)
    encoder.fit(None, torch.device("cpu"), no_progress)
    return encoder


def _features(encoder, n=3):
    x = torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return encoder.encode_batch(x)


def test_safetensors_checkpoint_gives_the_models_features(tmp_path: Path, tiny_vit_state):
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit_state.items()}, str(path))
    encoder = _loaded(MODEL, path)
    reference = timm.create_model(MODEL, pretrained=False, num_classes=0)
    reference.load_state_dict(tiny_vit_state)
    reference.eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    expected = reference.forward_features((x - encoder.mean) / encoder.std)[:, 0]
    assert torch.allclose(encoder.encode_batch(x), expected, atol=1e-5)


def test_official_mae_format_with_decoder_keys_loads(tmp_path: Path, tiny_vit_state):
    state = {f"module.{k}": v for k, v in tiny_vit_state.items()}
    state["mask_token"] = torch.zeros(1, 1, 128)
    state["decoder_embed.weight"] = torch.zeros(128, 192)
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": state, "epoch": 3}, path)
    features = _features(_loaded(MODEL, path))
    assert features.shape == (3, 192) and torch.isfinite(features).all()


def test_checkpoint_of_another_model_is_refused_with_the_fix(tmp_path: Path, tiny_vit_state):
    path = tmp_path / "small.pth"
    torch.save({k: v for k, v in tiny_vit_state.items() if not k.startswith("blocks.11")}, path)
    with pytest.raises(AuditInputError, match="does not fit the timm model.*--vit-model"):
        _loaded(MODEL, path)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


# torch warns about the hostile file's pickle protocol before refusing it: expected here
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickled_objects_are_refused_not_run(tmp_path: Path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "payload": _Exploit()}, f)
    with pytest.raises(AuditInputError, match="refused to load"):
        load_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_pixel_features_ignore_brightness():
    x = torch.rand(4, 1, 16, 16)
    encoder = PixelEncoder(16)
    a = torch.nn.functional.normalize(encoder.encode_batch(x), dim=1)
    b = torch.nn.functional.normalize(encoder.encode_batch(x * 0.5 + 0.2), dim=1)
    assert torch.allclose(a, b, atol=1e-5)


def test_every_features_choice_has_a_feature_space():
    assert set(LEARNED) == set(Features)  # every choice of --features has its space
