"""torchrun: two CPU processes (gloo) give the single process's numbers; only rank 0
writes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import audit_args

from pytest_gan_privacy.distributed import pack_shares

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


def test_pack_shares_are_contiguous_whole_packs_of_about_equal_size():
    hashes = sorted(f"{i:02x}{j}" for i in range(40) for j in range(i % 5 + 1))
    shares = pack_shares(hashes, 2, 3)
    assert shares[0].start == 0 and shares[-1].stop == len(hashes)
    assert all(a.stop == b.start for a, b in zip(shares, shares[1:], strict=False))
    for share in shares:
        if share.start:  # never inside a pack
            assert hashes[share.start][:2] != hashes[share.start - 1][:2]
        assert abs(len(share) - len(hashes) / 3) <= 5
    assert sorted(len(s) for s in pack_shares(hashes[:1], 2, 2)) == [0, 1]


def _numbers(path):
    data = json.loads(path.read_text())
    scores = {
        (row["sha256"], attack): score
        for row in data["candidates"]
        for attack, score in row["attack_scores"].items()
    }
    return data, scores


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed")
def test_torchrun_two_cpu_processes_give_the_single_process_numbers(clean_release, tmp_path):
    common = [*audit_args(clean_release), "--features", "pixels", "--no-cache", "--quiet"]
    common += ["--workers", "0"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", *common]
        + ["--report", str(single / "r.html"), "--json", str(single / "r.json")],
        env=env,
        check=False,
        capture_output=True,
    )
    two = tmp_path / "two"
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "--no-python"]
    cmd += ["gan-privacy", "audit", *common]
    cmd += ["--report", str(two / "r.html"), "--json", str(two / "r.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]  # the clean release passes
    one_data, one_scores = _numbers(single / "r.json")
    two_data, two_scores = _numbers(two / "r.json")
    assert two_data["world_size"] == 2 and one_data["world_size"] == 1
    assert two_scores == one_scores  # every attack, every candidate, exactly
    for name, attack in one_data["attacks"].items():
        assert two_data["attacks"][name]["auc"] == attack["auc"], name
        assert two_data["attacks"][name]["f1"] == attack["f1"], name
    assert two_data["verdict"] == one_data["verdict"]
    assert two_data["near_copies"] == one_data["near_copies"]
    assert sorted(p.name for p in two.iterdir()) == ["r.html", "r.json"]  # rank 0 only
    assert "encode generated (distributed)" in two_data["timings"]
