"""Benchmark scenarios built from ../shared/data, in the audit's layout.

Each builder reads a source scenario folder (generated/, real/used/, real/not_used/)
and writes a new one beside a scenario.json saying what was planted. Every image gets
a fresh random name (membership is never in a name); unchanged images are links to the
source (the audit follows links), so a built scenario costs little disk.

- few_copies: a model that memorised k patients: 1-2 augmented copies of each of k
  members added to the generated images (the `copies` scenario's recipe);
- twins: the real folders also hold near-twins of n candidates (a little of another
  image blended in, lightly moved and re-exposed: the next slice of a series), so that
  real-pair similarities reach 0.9 and more;
- look_alike: every image blended with one common real slice, so that real images are
  as alike as CT slices sharing a body outline.

    python benchmarks/builders.py few-copies ../shared/data/brainmri64/disjoint OUT --k 10
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pytest_gan_privacy.nearcopies import CANARY_LEVELS, CopyRecipe, augmented_copies

ROLES = ("generated", "real/used", "real/not_used")
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
TWIN = CopyRecipe(shift=1.0, angle=1.5, exposure=0.03, noise=1 / 255)


class Scenario:
    """The three roles' images: (source path or None, pixels or None) each, in content
    order; pixels are read on demand."""

    def __init__(self, src: Path):
        self.src = Path(src)
        self.images: dict[str, list[tuple[Path | None, np.ndarray | None]]] = {}
        for role in ROLES:
            files = [p for p in (self.src / role).rglob("*") if p.suffix.lower() in SUFFIXES]
            files.sort(key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest())
            self.images[role] = [(p, None) for p in files]
        meta = self.src / "scenario.json"
        self.meta = json.loads(meta.read_text()) if meta.exists() else {}

    def pixels(self, role: str, positions: list[int]) -> torch.Tensor:
        out = []
        for i in positions:
            path, pixels = self.images[role][i]
            if pixels is None:
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("L"), np.float32) / 255
            out.append(pixels)
        return torch.from_numpy(np.stack(out))[:, None]

    def add(self, role: str, images: torch.Tensor) -> None:
        self.images[role] += [(None, img[0].numpy()) for img in images]

    def write(self, out: Path, seed: int, **recipe) -> Path:
        """Write the scenario to `out` (which must not hold anything yet)."""
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty: give a new folder")
        rng = np.random.default_rng(seed)
        names = iter(rng.choice(1_000_000, sum(map(len, self.images.values())), replace=False))
        for role in ROLES:
            (out / role).mkdir(parents=True, exist_ok=True)
            for j in rng.permutation(len(self.images[role])):
                path, pixels = self.images[role][j]
                target = out / role / f"{next(names):06d}.png"
                if pixels is None:
                    os.symlink(os.path.abspath(path), target)
                else:
                    grey = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
                    Image.fromarray(grey, mode="L").save(target)
        meta = {**self.meta, "source": str(self.src), **recipe}
        meta.update({f"n_{r.split('/')[-1]}": len(v) for r, v in self.images.items()})
        (out / "scenario.json").write_text(json.dumps(meta, indent=2) + "\n")
        return out


def _pick(scenario: Scenario, role: str, count: int, seed: int, salt: str) -> list[int]:
    """Positions chosen by hashed content and seed: names and order do not matter."""
    keys = [
        hashlib.sha256(f"{salt}:{seed}:{i}".encode()).hexdigest()
        for i in range(len(scenario.images[role]))
    ]
    return sorted(range(len(keys)), key=keys.__getitem__)[:count]


def few_copies(src: Path, out: Path, k: int, seed: int = 12, level: str = "standard") -> Path:
    """k members memorised: 1-2 augmented copies of each added to the generated images
    (made as the power check's canaries of `level` are: standard, exact or hard)."""
    s = Scenario(src)
    members = _pick(s, "real/used", k, seed, "few-copies")
    per = np.random.default_rng(seed).integers(1, 3, size=len(members))
    sources = [m for m, n in zip(members, per, strict=True) for _ in range(n)]
    if sources:
        recipe = CANARY_LEVELS[level]
        s.add("generated", augmented_copies(s.pixels("real/used", sources), seed, recipe))
    name = f"{s.src.name}+few-copies-{k}" + ("" if level == "standard" else f"-{level}")
    return s.write(
        out, seed, scenario=name, memorised_members=k, copy_level=level,
        planted_copies=len(sources), expected="FAIL for k >= 1: members have near-copies",
    )  # fmt: skip


def twins(src: Path, out: Path, n: int = 20, seed: int = 12) -> Path:
    """n candidates (from used and not_used alike) get a near-twin in their own folder."""
    s = Scenario(src)
    for role in ("real/used", "real/not_used"):
        chosen = _pick(s, role, n // 2, seed, f"twins-{role}")
        partners = [(c + 7) % len(s.images[role]) for c in chosen]
        mix = torch.from_numpy(
            np.random.default_rng(seed).uniform(0, 0.3, len(chosen)).astype(np.float32)
        ).view(-1, 1, 1, 1)
        blended = (1 - mix) * s.pixels(role, chosen) + mix * s.pixels(role, partners)
        s.add(role, augmented_copies(blended, seed, TWIN))
    return s.write(
        out, seed, scenario=f"{s.src.name}+twins-{n}", twins=n,
        expected="as the source: twins among the candidates must not change the verdict",
    )  # fmt: skip


def look_alike(src: Path, out: Path, weight: float = 0.5, seed: int = 12) -> Path:
    """Every image blended with one real slice (the sharpest candidate's): real images
    as alike as CT slices that share a body outline and lung fields."""
    s = Scenario(src)
    template = s.pixels("real/not_used", [0])[0]
    for role in ROLES:
        blended = (1 - weight) * s.pixels(
            role, list(range(len(s.images[role])))
        ) + weight * template
        s.images[role] = [(None, img[0].numpy()) for img in blended]
    return s.write(out, seed, scenario=f"{s.src.name}+look-alike-{weight:g}", look_alike=weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="builder", required=True)
    for name in ("few-copies", "twins", "look-alike"):
        p = sub.add_parser(name)
        p.add_argument("src", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--seed", type=int, default=12)
        if name == "few-copies":
            p.add_argument("--k", type=int, required=True)
            p.add_argument("--level", choices=sorted(CANARY_LEVELS), default="standard")
        if name == "twins":
            p.add_argument("--n", type=int, default=20)
        if name == "look-alike":
            p.add_argument("--weight", type=float, default=0.5)
    args = parser.parse_args()
    if args.builder == "few-copies":
        print(few_copies(args.src, args.out, args.k, args.seed, args.level))
    elif args.builder == "twins":
        print(twins(args.src, args.out, args.n, args.seed))
    else:
        print(look_alike(args.src, args.out, args.weight, args.seed))


if __name__ == "__main__":
    main()
