"""A content-addressed cache of named tensors: image features, trained weights and the
near-copy scan and threshold.

An entry is a safetensors file named by its key: the SHA-256 of everything that decides
its numbers (for features: the image's content hash, the encoder's identity and
settings, and the versions that change numbers; for weights: the training images'
hashes and the training settings). Each entry stores its key and a checksum of its
tensors in its metadata. An entry that does not parse, carries another key or fails
its checksum is a miss: the caller recomputes it and the entry is replaced. Nothing in
the folder is trusted without these checks. (They catch corruption, not a malicious
writer: the folder is private, 0700, and a shared folder must be one you trust.)

Entries are written to a unique temporary file in their folder and renamed, so two
audits sharing a folder (pytest-xdist workers, two CI jobs on one runner) never read
half an entry nor fail on each other's writes: the last rename wins, and both wrote the
same numbers. Entries are not fsynced, which would cost milliseconds each: a power cut
can leave a garbage entry, which the checksum rejects.

Layout: `<folder>/<namespace>/<key[:2]>/<key>.safetensors`. An entry stands alone
(no index to update with a read-modify-write that two processes would race on).
Features are stored in packs of images whose files share a content-key prefix (see
`features.feature_packs`).

Usage, e.g. for weights trained on a set of images::

    key = cache_key("mae-weights", generated.manifest_sha256(), settings_dict)
    state = cache.get("weights", key)
    if state is None:
        state = train(...)
        cache.put("weights", key, state)
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import safetensors.torch  # imported here, not lazily: a PyO3 module loads once per process
import torch
from filelock import FileLock

from .files import ENV_VAR, atomic_write, cache_folder, default_cache_dir  # noqa: F401

CACHE_FORMAT = "pytest-gan-privacy-cache/1"


def cache_key(*parts: Any) -> str:
    """The SHA-256 of the parts as canonical JSON (dict keys sorted; paths as strings)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A checksum of named tensors: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


class TensorCache:
    """Named tensor dicts stored by key, verified on every read.

    Never raises on a bad folder: a folder that cannot be written turns writing off
    for the run and adds a line to `warnings` (results are the same, only slower).
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.readable = self.writable = folder is not None
        self.hits = self.misses = self.rejected = 0
        self.warnings: list[str] = []
        if folder is None:
            self.warnings.append(
                "no cache folder: there is no home folder and neither --cache-dir nor "
                f"{ENV_VAR} is set; nothing was cached"
            )

    def _path(self, namespace: str, key: str) -> Path:
        assert self.folder is not None
        return self.folder / namespace / key[:2] / f"{key}.safetensors"

    def get(self, namespace: str, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors stored under `key`, or None: absent, unreadable, foreign or corrupt."""
        if self.folder is None or not self.readable:
            return None
        try:
            data = self._path(namespace, key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # not stored (or no folder there)
            self.misses += 1
            return None
        except OSError as exc:  # a folder this user cannot enter, a file it cannot read
            self._unusable(exc)
            self.misses += 1
            return None
        tensors = _verified(data, key)
        if tensors is None:
            self.rejected += 1
            self.misses += 1
        else:
            self.hits += 1
        return tensors

    def exists(self, namespace: str, key: str) -> bool:
        """Whether an entry is stored under `key` (not whether it is sound: `get` checks)."""
        if self.folder is None or not self.readable:
            return False
        try:
            return self._path(namespace, key).is_file()
        except OSError as exc:  # is_file raises where the user cannot enter a folder
            self._unusable(exc)
            return False

    def _unusable(self, exc: OSError) -> None:
        """A folder that cannot be read: the run goes on without a cache, and says so."""
        if self.readable:
            self.readable = self.writable = False
            self.warnings.append(
                f"the cache folder {self.folder} cannot be read ({exc.strerror or exc}); "
                "nothing was read from it or cached. Give a --cache-dir you can read and "
                "write, or --no-cache"
            )

    def put(
        self,
        namespace: str,
        key: str,
        tensors: dict[str, torch.Tensor],
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Store the tensors (and string metadata) under `key`, atomically."""
        if not self.writable or self.folder is None:
            return
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        meta = {**(metadata or {}), "format": CACHE_FORMAT, "key": key}
        meta["sha256"] = tensors_sha256(tensors)
        try:
            if not self.folder.exists():
                self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(
                self._path(namespace, key),
                safetensors.torch.save(tensors, meta),
                durable=False,
                private=True,
            )
        except OSError as exc:
            self.writable = False
            self.warnings.append(
                f"the cache folder {self.folder} cannot be written ({exc.strerror or exc}); "
                "nothing more was cached. Give a writable --cache-dir, or --no-cache"
            )

    def lock(self, namespace: str, key: str) -> AbstractContextManager:
        """An inter-process lock on one entry, held while it is computed: processes that
        need the same entry (pytest-xdist workers training one MAE) compute it once and
        the others read it. The operating system releases it if its holder dies. No
        lock (nothing to wait for) when the folder cannot be written."""
        if not self.writable or self.folder is None:
            return nullcontext()
        path = self._path(namespace, key).with_suffix(".lock")
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as in put
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path))
            lock.acquire()
        except OSError:  # a lock file that cannot be made: compute without one
            return nullcontext()
        return _Held(lock)

    def stats(self) -> dict:
        """Where the cache is and how it served this run (for the JSON result)."""
        return {
            "folder": None if self.folder is None else str(self.folder),
            "hits": self.hits,
            "misses": self.misses,
            "rejected": self.rejected,
        }


class _Held(AbstractContextManager):
    """A lock already acquired, released on leaving the `with` block."""

    def __init__(self, lock: FileLock):
        self.lock = lock

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _verified(data: bytes, key: str) -> dict[str, torch.Tensor] | None:
    """The entry's tensors when it parses, carries `key` and matches its checksum."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        tensors = safetensors.torch.load(data)
    except Exception:  # noqa: BLE001 - whatever is wrong with an entry, it is a miss
        return None
    return tensors if tensors_sha256(tensors) == meta.get("sha256") else None


def cached(cache: TensorCache | None, namespace: str, key: str, compute, load):
    """A result stored under `key` (read back by `load`), or computed and stored (its
    `tensors()`): for results too costly to redo on a warm run, such as the near-copy
    scan and threshold."""
    stored = None if cache is None else cache.get(namespace, key)
    if stored is not None:
        return load(stored)
    result = compute()
    if cache is not None:
        cache.put(namespace, key, result.tensors())
    return result


def open_cache(settings) -> TensorCache | None:
    """The cache the settings ask for: None with `no_cache`, else the folder
    `cache_folder` names (a cache that warns and caches nothing without one)."""
    if settings.no_cache:
        return None
    return TensorCache(cache_folder(settings))
