"""Outputs: atomic writes, and which existing files an output may replace."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.files import (
    GENERATOR,
    atomic_write,
    check_cache_folder,
    check_outputs,
    check_replaceable,
)


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


# --- outputs never touch inputs, and fail before the audit ---------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    for folder in ("generated", "real/used", "real/not_used"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "real/used/004169.png").write_bytes(b"a training image")
    (tmp_path / "groups.csv").write_text("path,group\n")
    return {
        "generated": tmp_path / "generated",
        "used": tmp_path / "real/used",
        "not_used": tmp_path / "real/not_used",
        "groups": tmp_path / "groups.csv",
    }


@pytest.mark.parametrize(
    "where, message",
    [
        ("real/used/004169.png", "is inside the used folder"),
        ("real/used/new.json", "is inside the used folder"),
        ("real/not_used/deep/r.html", "is inside the not_used folder"),
        ("generated", "is the generated input"),
        ("groups.csv", "is the groups input"),
        ("link-to-used/r.html", "is inside the used folder"),
    ],
)
def test_an_output_among_the_inputs_is_refused_even_when_named(tmp_path, inputs, where, message):
    os.symlink(inputs["used"], tmp_path / "link-to-used")
    before = (tmp_path / "real/used/004169.png").read_bytes()
    with pytest.raises(AuditInputError, match=message):
        check_outputs([(tmp_path / where, True)], inputs)
    assert (tmp_path / "real/used/004169.png").read_bytes() == before


def test_a_relative_output_names_the_folder_it_lands_in(tmp_path, inputs, monkeypatch):
    monkeypatch.chdir(inputs["used"])
    with pytest.raises(AuditInputError, match=r"inside the used folder \. \(.*real/used\)"):
        check_outputs([(Path("gan-audit-report.html"), False)], {"used": Path(".")})


def test_a_report_and_a_json_at_one_path_are_refused(tmp_path):
    with pytest.raises(AuditInputError, match="the report and the JSON would be the same file"):
        check_outputs([(tmp_path / "x", True, "report"), (tmp_path / "x", True, "JSON")])
    os.symlink(tmp_path, tmp_path / "same-folder")
    with pytest.raises(AuditInputError, match="same file"):
        check_outputs(
            [(tmp_path / "r.html", True, "report"), (tmp_path / "same-folder/r.html", True, "JSON")]
        )


def test_places_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    read_only = tmp_path / "read-only.html"
    read_only.write_text("x")
    read_only.chmod(0o444)
    os.mkfifo(tmp_path / "pipe.html")
    cases = {
        tmp_path / "a-folder": "is a folder: give a file name",
        tmp_path / "a-file/r.html": "a-file is a file, not a folder",
        read_only: "is read-only",
        tmp_path / "pipe.html": "not a regular file",
        Path("/proc/gan-audit/r.html"): "cannot be written: /proc is not writable",
    }
    for path, message in cases.items():
        with pytest.raises(AuditInputError, match=message):
            check_outputs([(path, True)])
    check_outputs([(tmp_path / "new/deeper/r.html", True)])  # folders are made when writing
    assert not (tmp_path / "new").exists()  # ... not by the check


def test_a_note_that_mentions_the_tool_is_not_ours(tmp_path):
    note = tmp_path / "gan-audit-report.html"
    note.write_text("my notes: try pytest-gan-privacy with --max-f1 0.5")
    with pytest.raises(AuditInputError, match="not written by"):
        check_replaceable(note, named_by_user=False)
    note.write_text(f'<html><head><meta name="generator" content="{GENERATOR}">')
    check_replaceable(note, named_by_user=False)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_reports_follow_the_umask_and_cache_entries_stay_private(tmp_path, mask, expected):
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "report.html", "<html>")
        atomic_write(tmp_path / "entry.safetensors", b"x", durable=False, private=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "entry.safetensors").stat().st_mode) == 0o600


def test_a_replaced_report_keeps_its_mode(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("old")
    report.chmod(0o640)
    atomic_write(report, "new")
    assert stat.S_IMODE(report.stat().st_mode) == 0o640 and report.read_text() == "new"


def test_the_cache_folder_stays_apart_from_the_inputs(tmp_path, inputs):
    with pytest.raises(AuditInputError, match="inside the used folder"):
        check_cache_folder(inputs["used"] / ".cache", inputs)
    with pytest.raises(AuditInputError, match="holds the generated input"):
        check_cache_folder(tmp_path, inputs)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(AuditInputError, match="is a file, not a folder"):
        check_cache_folder(tmp_path / "a-file/cache", inputs)
    with pytest.raises(AuditInputError, match="is a file, not a folder"):
        check_cache_folder(tmp_path / "a-file", inputs)
    check_cache_folder(tmp_path / "cache", inputs)


def test_a_report_path_that_links_to_an_input_replaces_the_link_not_the_image(tmp_path, inputs):
    image = inputs["used"] / "004169.png"
    link = tmp_path / "report.html"
    os.symlink(image, link)
    check_outputs([(link, True)], inputs)  # it lands beside the link, outside the inputs
    atomic_write(link, "<html>")
    assert not link.is_symlink() and link.read_text() == "<html>"
    assert image.read_bytes() == b"a training image"
