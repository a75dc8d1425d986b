"""Outputs: atomic writes, and which existing files an output may replace."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.files import GENERATOR, atomic_write, check_outputs, check_replaceable


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path, monkeypatch):
    """Ctrl-C between writing and renaming: the old report stays whole, no litter."""

    target = tmp_path / "gan-audit-report.json"
    target.write_text("old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new" * 1000)
    assert target.read_text() == "old" and os.listdir(tmp_path) == [target.name]


def test_a_killed_writer_leaves_the_old_file_or_the_new_one(tmp_path: Path):
    """A process killed while writing a large file (SIGKILL: no clean-up runs): the file
    is the old one or the new one, never a part."""

    target = tmp_path / "report.html"
    target.write_text("old report")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pytest_gan_privacy.files import atomic_write; "
            "atomic_write(sys.argv[1], b'x' * 50_000_000)",
            str(target),
        ]
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".report.html.*.tmp")) and writer.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    size = target.stat().st_size
    assert size in (len("old report"), 50_000_000)
    if size == len("old report"):
        assert target.read_text() == "old report"


def test_a_default_path_replaces_only_our_own_files(tmp_path: Path):
    theirs, ours = tmp_path / "theirs.json", tmp_path / "ours.json"
    theirs.write_text('{"mine": true}')
    ours.write_text(f'{{"generator": "{GENERATOR}"}}')
    check_replaceable(ours, named_by_user=False)
    with pytest.raises(AuditInputError, match="theirs.json exists and was not written by"):
        check_replaceable(theirs, named_by_user=False)
    check_replaceable(theirs, named_by_user=True)  # the user named that very path
    with pytest.raises(AuditInputError, match="theirs.json"):
        check_outputs([(ours, False), (theirs, False)])
    check_outputs([(None, False), (theirs, True)])
