"""The feature and weights cache: verified entries, the right folder, shared safely."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import audit_args, without_clock
from PIL import Image

from pytest_gan_privacy.cache import ENV_VAR, TensorCache, cache_key, default_cache_dir, open_cache
from pytest_gan_privacy.encoders import Encoder, PixelEncoder
from pytest_gan_privacy.features import Encoding, encode_images, feature_packs
from pytest_gan_privacy.images import load_image_set
from pytest_gan_privacy.settings import AuditSettings


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.safetensors"))


def test_put_then_get_returns_the_same_tensors(tmp_path: Path):
    cache = TensorCache(tmp_path)
    key = cache_key("mae-weights", "manifest", {"epochs": 3})
    state = {"w": torch.randn(4, 3), "step": torch.tensor(7), "mask": torch.ones(2, dtype=bool)}
    cache.put("weights", key, state, {"note": "trained"})
    back = cache.get("weights", key)
    assert back is not None and set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert cache.get("weights", cache_key("another")) is None
    assert cache.stats() == {"folder": str(tmp_path), "hits": 1, "misses": 1, "rejected": 0}


def test_keys_depend_on_every_part():
    assert cache_key("a", {"x": 1, "y": 2}) == cache_key("a", {"y": 2, "x": 1})
    keys = {cache_key("a", {"x": 1}), cache_key("a", {"x": 2}), cache_key("b", {"x": 1})}
    assert len(keys) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte", "garbage", "empty", "foreign"])
def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path: Path, damage: str):
    cache = TensorCache(tmp_path)
    key, other = cache_key("one"), cache_key("two")
    cache.put("features", key, {"features": torch.arange(64.0)})
    cache.put("features", other, {"features": torch.zeros(64)})
    path = cache._path("features", key)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 10])
    elif damage == "flip-a-byte":  # in the payload: parses, fails the checksum
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * len(data))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid entry of another key under this key's name
        shutil.copy(cache._path("features", other), path)
    assert cache.get("features", key) is None
    assert cache.rejected == 1


def test_the_folder_comes_from_the_setting_the_environment_or_xdg(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-gan-privacy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pytest-gan-privacy"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"

    settings = AuditSettings(generated=tmp_path, used=tmp_path, not_used=tmp_path)
    assert open_cache(settings).folder == tmp_path / "env"
    settings.cache_dir = tmp_path / "mine"
    assert open_cache(settings).folder == tmp_path / "mine"
    settings.no_cache = True
    assert open_cache(settings) is None


def test_an_unwritable_folder_is_a_warning_not_a_crash(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = TensorCache(blocker / "cache")
    cache.put("features", cache_key("x"), {"features": torch.ones(3)})
    cache.put("features", cache_key("y"), {"features": torch.ones(3)})
    assert cache.get("features", cache_key("x")) is None
    assert len(cache.warnings) == 1 and "cannot be written" in cache.warnings[0]


class CountingEncoder(PixelEncoder):
    """Pixel features that count the images they encode."""

    def __init__(self):
        super().__init__(16)
        self.encoded = 0

    def encode_batch(self, pixels):
        self.encoded += len(pixels)
        return super().encode_batch(pixels)


def _packs(folder: Path, role: str = "generated", encoder=None) -> dict[str, list[int]]:
    encoder = encoder or CountingEncoder()
    return dict(feature_packs(load_image_set(folder, role), encoder, "cpu"))


def test_only_new_or_damaged_packs_are_encoded_and_results_are_identical(clean_release, tmp_path):
    folder = tmp_path / "generated"
    shutil.copytree(clean_release / "generated", folder)
    cache = TensorCache(tmp_path / "cache")

    def encode(cache):
        encoder = CountingEncoder()
        images = load_image_set(folder, "generated")
        return encode_images(images, encoder, Encoding("cpu", 32, 0, cache=cache)), encoder.encoded

    uncached, n = encode(None)
    assert n == 150
    cold, n = encode(cache)
    assert n == 150 and torch.equal(cold, uncached)
    assert len(_entries(tmp_path / "cache")) == len(_packs(folder)) > 50
    warm, n = encode(cache)
    assert n == 0 and torch.equal(warm, uncached)

    before = _packs(folder)
    Image.new("L", (64, 64), 99).save(folder / "new.png")
    after = _packs(folder)
    (new_pack,) = set(after) - set(before)
    damaged = next(key for key in before if key in after)
    path = cache._path("features", damaged)
    path.write_bytes(path.read_bytes()[:-8])
    features, n = encode(cache)
    assert n == len(after[new_pack]) + len(after[damaged]) < 10
    assert len(features) == 151 and torch.equal(encode(None)[0], features)
    assert cache.get("features", damaged) is not None  # the damaged entry was replaced


def test_an_encoder_without_an_identity_is_never_cached(clean_release, tmp_path):
    class Anonymous(Encoder):
        image_size = 8

        def encode_batch(self, pixels):
            return pixels.flatten(1)

    images = load_image_set(clean_release / "real" / "used", "used")
    encode_images(images, Anonymous(), Encoding("cpu", workers=0, cache=TensorCache(tmp_path)))
    assert _entries(tmp_path) == []


def _numbers(path: Path) -> dict:
    return without_clock(json.loads(path.read_text()))


def test_two_audits_share_a_cache_folder_at_once(leaky_release, tmp_path: Path):
    """Two processes (different hash seeds) encode and cache the same images at the same
    time: neither fails, both give the same numbers, every entry is sound."""
    cache = tmp_path / "shared-cache"
    runs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", *audit_args(leaky_release)]
        cmd += ["--report", str(tmp_path / f"r{i}.html"), "--cache-dir", str(cache), "--quiet"]
        cmd += ["--batch-size", "8"]  # many small writes, interleaved between the two
        cmd += ["--mae-epochs", "1"]  # the real MAE preset (another process), kept short
        env = {**os.environ, "PYTHONHASHSEED": str(i + 1)}
        runs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 1, err.decode()
    assert _numbers(tmp_path / "r0.json") == _numbers(tmp_path / "r1.json")
    entries = _entries(cache)
    roles = (("generated", "generated"), ("real/used", "used"), ("real/not_used", "not_used"))
    packs = {k for sub, role in roles for k in _packs(leaky_release / sub, role, PixelEncoder())}
    assert packs <= {p.stem for p in entries}  # the other feature spaces are cached too
    # no half-written entries (a lock file may stay: the operating system holds the lock)
    assert not [
        p for p in cache.rglob("*") if p.is_file() and p.suffix not in (".safetensors", ".lock")
    ]
    reader = TensorCache(cache)
    namespaces = {"features", "weights", "near-copy-scans", "near-copy-thresholds"}
    assert {p.parent.parent.name for p in entries} == namespaces
    for entry in entries:
        assert reader.get(entry.parent.parent.name, entry.stem) is not None, entry


def test_a_warm_run_reads_the_near_copy_scan_and_threshold_and_a_change_recomputes_them(
    leaky_release, tmp_path, monkeypatch
):
    from pytest_gan_privacy import pipeline, scoring

    release = tmp_path / "release"
    shutil.copytree(leaky_release, release)
    settings = AuditSettings(
        generated=release / "generated",
        used=release / "real" / "used",
        not_used=release / "real" / "not_used",
        features="pixels",
        cache_dir=tmp_path / "cache",
    )
    cold = pipeline.run_audit(settings)
    calls = []
    scan, threshold = scoring.robust_scan, pipeline.near_copy_threshold
    monkeypatch.setattr(
        scoring, "robust_scan", lambda *a, **k: calls.append("scan") or scan(*a, **k)
    )
    monkeypatch.setattr(
        pipeline, "near_copy_threshold", lambda *a, **k: calls.append("level") or threshold(*a, **k)
    )
    warm = pipeline.run_audit(settings)
    assert calls == []
    assert warm.near_copies == cold.near_copies and warm.power == cold.power
    for name, result in cold.attacks.items():
        assert np.array_equal(warm.attacks[name].scores.scores, result.scores.scores), name
    # one more generated image: another scan, the same threshold (it is the candidates');
    # another seed: another copy level, the same scan (it draws nothing)
    Image.new("L", (64, 64), 99).save(release / "generated" / "new.png")
    pipeline.run_audit(settings)
    assert calls == ["scan"]
    pipeline.run_audit(dataclasses.replace(settings, seed=settings.seed + 1))
    assert calls == ["scan", "level"]
