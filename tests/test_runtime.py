"""Devices and progress lines."""

import pytest
import torch

from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.runtime import ProgressPrinter, autocast, resolve_device


def test_a_ci_log_gets_a_line_per_quarter_and_per_stage():
    lines = []
    progress = ProgressPrinter(lines.append, interactive=False)
    for done in range(0, 101, 5):
        progress("encoding generated", done, 100)
    progress("encoding used", 0, 10)
    progress("encoding used", 10, 10)
    assert lines == [
        "gan-audit: encoding generated 0/100 (0%)\n",
        "gan-audit: encoding generated 25/100 (25%)\n",
        "gan-audit: encoding generated 50/100 (50%)\n",
        "gan-audit: encoding generated 75/100 (75%)\n",
        "gan-audit: encoding generated 100/100 (100%)\n",
        "gan-audit: encoding used 0/10 (0%)\n",
        "gan-audit: encoding used 10/10 (100%)\n",
    ]


def test_a_terminal_gets_one_line_rewritten_and_ended_when_done():
    lines = []
    progress = ProgressPrinter(lines.append, interactive=True)
    for done in range(1000):  # many updates within 0.2 s: shown at most a few times
        progress("scan", done, 1000)
    progress("scan", 1000, 1000)
    assert len(lines) < 20 and all(line.startswith("\r") for line in lines)
    assert lines[-1] == "\rgan-audit: scan 1000/1000 (100%)\n"
    assert not any(line.endswith("\n") for line in lines[:-1])


def test_an_empty_stage_does_not_divide_by_zero():
    lines = []
    ProgressPrinter(lines.append, interactive=False)("nothing to do", 0, 0)
    assert lines == ["gan-audit: nothing to do 0/0 (0%)\n"]


def test_cuda_without_a_gpu_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AuditInputError, match="no CUDA GPU; use --device cpu or auto"):
        resolve_device("cuda")


def test_autocast_off_computes_in_float32():
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu"), False):
        assert (x @ x).dtype == torch.float32


def test_xdist_workers_share_the_cpus_and_start_no_extra_decoders(monkeypatch):
    import os

    from pytest_gan_privacy import images, runtime

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: None)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert runtime.cpu_budget() == 8 and images.default_workers() == 4
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert runtime.cpu_budget() == 2 and images.default_workers() == 1
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "8")
    assert runtime.cpu_budget() == 1 and images.default_workers() == 0
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: 1.5)  # a container's --cpus 1.5
    assert runtime.cpu_budget() == 2


def test_an_audit_runs_with_the_threads_of_its_share(monkeypatch):
    import torch

    from pytest_gan_privacy import runtime

    monkeypatch.setattr(runtime, "cpu_budget", lambda: 1)
    before = torch.get_num_threads()
    with runtime.cpu_threads() as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
