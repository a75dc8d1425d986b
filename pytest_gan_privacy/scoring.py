"""Labels-blind scoring, which the audit and predict share: fit -> encode -> attack ->
scan. Every attack scores the real pools (loading.Release) from the generated images
alone; no label is used, so the same scores serve the audit (used, not_used) and
predict (the development set and the unlabelled candidates).

The candidates' features are held in memory, the generated side streams through the
attacks block by block (features.FeatureStream), once per feature space. Under
torchrun the ranks train the MAE together and share the generated side's decoding and
encoding (distributed.py); rank 0 goes on alone with the gathered features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attacks import AttackScores, near_copy_attack, similarity_attacks
from .cache import cached
from .distributed import World, leave
from .encoders import Encoder, FixedEncoder, feature_spaces
from .features import Encoding, FeatureStream, encode_images, shared_features
from .images import ImageSet
from .loading import Release
from .nearcopies import NearCopyEncoder, RobustScan, detector_key, robust_scan
from .runtime import Stopwatch, cpu_budget
from .settings import AuditSettings, NearCopySearch
from .shortlist import chosen_search, indexed_scan, search_identity
from .similarity import TensorRows


@dataclass
class Scores:
    """What the attacks made of the real pools, labels-blind, in pool order."""

    attacks: list[AttackScores]  # every feature space's attacks, then near-copy
    scan: RobustScan  # the near-copy scan: the near-copies and the evidence shown
    spaces: list[Encoder]  # the feature spaces, fitted


def score_release(
    settings: AuditSettings, release: Release, encoding: Encoding, world: World, clock: Stopwatch
) -> Scores | None:
    """fit -> encode -> attack -> scan: every attack's scores of the release's pools
    (None on a torchrun rank other than 0, once its share is done)."""
    spaces = fit_spaces(settings, release.generated, encoding, clock)
    generated = GeneratedSide(release.generated, encoding)
    if world.distributed:
        generated.share(world, [*spaces, NearCopyEncoder()])
        clock.lap("encode generated (distributed)")
        if not world.main:
            return None
        # rank 0 goes on alone: it takes its machine's CPUs (the other ranks are done),
        # which also makes its float32 sums those of a single process (a matrix
        # multiply's last bit depends on its number of threads)
        torch.set_num_threads(cpu_budget(alone=True))
    attacks: list[AttackScores] = []
    for encoder in spaces:
        attacks += attack_in_space(encoder, release, generated, encoding, clock)
    scan, streamed = scan_near_copies(settings, release, generated, encoding, clock)
    attacks.append(near_copy_attack(scan))
    clock.lap("attacks near-copy")
    clock.move(streamed, "attacks near-copy", "encode near-copy")
    return Scores(attacks, scan, spaces)


def fit_spaces(
    settings: AuditSettings, generated: ImageSet, encoding: Encoding, clock: Stopwatch
) -> list[Encoder]:
    """The feature spaces the settings ask for, fitted: the learned one learns from the
    generated images (the stage "fit <space>"), the others need nothing."""
    spaces = feature_spaces(settings, encoding.device, encoding.cache)
    for encoder in spaces:
        encoder.fit(generated, encoding.device, encoding.progress)
        if not isinstance(encoder, FixedEncoder):
            clock.lap(f"fit {encoder.name}")
    return spaces


def attack_in_space(
    encoder: Encoder,
    release: Release,
    generated: GeneratedSide,
    encoding: Encoding,
    clock: Stopwatch,
) -> list[AttackScores]:
    """One feature space's attacks: the pools' (and the reference's) features in
    memory, the generated ones streamed through the attacks."""
    candidates = torch.cat([encode_images(pool, encoder, encoding) for pool in release.pools])
    reference = release.reference
    reference_rows = None if reference is None else encode_images(reference, encoder, encoding)
    clock.lap(f"encode {encoder.name}")
    rows = generated.rows(encoder)
    scores = similarity_attacks(encoder, candidates, rows, encoding.device, reference_rows)
    clock.lap(f"attacks {encoder.name}")
    clock.move(seconds_of(rows), f"attacks {encoder.name}", f"encode {encoder.name}")
    return scores


def scan_near_copies(
    settings: AuditSettings,
    release: Release,
    generated: GeneratedSide,
    encoding: Encoding,
    clock: Stopwatch,
) -> tuple[RobustScan, float]:
    """The near-copy scan (generated x candidates x 147 shifts and turns: every pair, or
    a shortlist from an index, shortlist.py), and the seconds it spent encoding the
    generated side (0 when read from the cache). The generated side is encoded (and
    cached) like any feature, the candidates' side is their pixels, to shift and turn.
    The scan is cached as a whole: a warm run skips it."""
    pools, device = release.pools, encoding.device
    search = chosen_search(settings.near_copy_search, len(release.generated), len(release.pixels))
    hashes = [release.generated.hashes, *(p.hashes for p in pools)]
    key = detector_key(device, hashes, pools[0].orientation, search_identity(search))
    clock.lap("encode near-copy")
    streamed = [0.0]

    def scan() -> RobustScan:
        rows = generated.rows(NearCopyEncoder())

        def progress(done: int, total: int) -> None:
            encoding.progress(f"near-copy scan ({search}, generated)", done, total)

        if search is NearCopySearch.INDEX:
            result = indexed_scan(rows, release.pixels, progress=progress)
        else:
            result = robust_scan(rows, release.pixels, device, progress=progress)
        streamed[0] = seconds_of(rows)
        return result

    result = cached(encoding.cache, "near-copy-scans", key, scan, lambda t: RobustScan(**t))
    return result, streamed[0]


def seconds_of(rows: FeatureStream | TensorRows) -> float:
    """Seconds a stream spent decoding and encoding (0: rows held in memory)."""
    return getattr(rows, "seconds", 0.0)


@dataclass
class GeneratedSide:
    """The generated images' features, streamed: never all in memory (under torchrun,
    rank 0 holds the rows the ranks gathered)."""

    images: ImageSet
    encoding: Encoding
    gathered: dict[str, torch.Tensor] = field(default_factory=dict)

    def share(self, world: World, encoders: list[Encoder]) -> None:
        """Under torchrun: every rank encodes its share, rank 0 gathers the rows."""
        for encoder in encoders:
            rows = shared_features(world, self.images, encoder, self.encoding)
            if rows is not None:
                self.gathered[encoder.name] = rows
        # that was the last collective: every rank leaves the process group now (a
        # process that exits with it alive may abort in its threads' teardown)
        leave()

    def rows(self, encoder: Encoder) -> FeatureStream | TensorRows:
        if encoder.name in self.gathered:
            return TensorRows(self.gathered.pop(encoder.name))
        return FeatureStream(self.images, encoder, self.encoding)
