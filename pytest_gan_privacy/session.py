"""The pytest session's audit configuration: settings from the command line, the ini
file and markers, the rootdir guard, and the per-process state (kept in the config's
stash). Imports nothing heavy: the plugin loads it on every pytest run."""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from .errors import AuditInputError
from .settings import DEFAULT_REPORT, OPTIONS, REQUIRED, AuditSettings


@dataclass
class SessionState:
    """Per-session state, kept in the config's stash."""

    enabled: bool
    base: dict[str, Any]  # settings from the ini file and the command line
    named: tuple[Path, ...]  # output paths the user named (they may replace any file)
    # audits run in this process: settings key -> AuditResult, or its error message
    results: dict[tuple, Any] = field(default_factory=dict)
    errors: dict[tuple, str] = field(default_factory=dict)
    handed_over: set[tuple] = field(default_factory=set)  # (key, report, json) handed over
    # where the settings came from, for messages: the ini file read, and its empty keys
    ini: str = ""
    empty_ini_keys: tuple[str, ...] = ()


STATE = pytest.StashKey[SessionState]()


def session_state(config: pytest.Config) -> SessionState:
    return config.stash[STATE]


def start_session(config: pytest.Config) -> SessionState:
    """Read and check the configuration once, at pytest_configure, and keep it."""
    enabled = bool(config.getoption("gan_audit"))
    empty: list[str] = []
    base = configured(config, empty) if enabled else {}
    named = tuple(base[k] for k in ("report", "json") if k in base)
    if enabled and "report" not in base:
        # the folder pytest was started in (rootdir can be an input folder's parent)
        base["report"] = Path(config.invocation_params.dir) / DEFAULT_REPORT
    state = SessionState(
        enabled=enabled,
        base=base,
        named=named,
        ini=_ini_description(config),
        empty_ini_keys=tuple(empty),
    )
    config.stash[STATE] = state
    return state


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def configured(config: pytest.Config, empty: list[str] | None = None) -> dict[str, Any]:
    """Settings from the ini file and the command line, validated (command line wins).
    Relative paths are relative to the folder pytest started in, or to the ini file.
    `empty` collects the ini keys that are present but empty (not configured)."""
    base: dict[str, Any] = {}
    ini_dir = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
    for option in OPTIONS:
        value = config.getoption(f"gan_audit_{option.name}")
        folder = Path(config.invocation_params.dir)
        if value is None:
            value = config.getini(f"gan_audit_{option.name}")
            folder = ini_dir
            if value in (None, "", []):
                if value is not None and empty is not None:
                    empty.append(f"gan_audit_{option.name}")
                continue
            try:
                value = option.parse(str(value).strip())
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini key gan_audit_{option.name}: {exc}") from None
        if option.is_path:
            value = folder / value
        base[option.name] = value
    return base


def _ini_description(config: pytest.Config) -> str:
    if config.inipath:
        return f"the ini file {config.inipath}"
    return f"no ini file, none was found from its rootdir {config.rootpath}"


# --- the settings of one audit ----------------------------------------------------------


def settings_key(settings: AuditSettings) -> tuple:
    """Settings that decide the numbers (not where outputs go)."""
    d = settings.as_dict()
    return tuple((k, str(d[k])) for k in sorted(d) if k not in ("report", "json"))


def make_settings(state: SessionState, overrides: dict[str, Any]) -> AuditSettings:
    values = {**state.base, **overrides}
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        flags = ", ".join(f"--gan-audit-{k.replace('_', '-')}=FOLDER" for k in missing)
        keys = [f"gan_audit_{k}" for k in missing]
        empty = [k for k in keys if k in state.empty_ini_keys]
        why = f" ({', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty there)"
        raise AuditInputError(
            f"--gan-audit is on but the audit has no {', '.join(missing)} folder: nothing "
            f"was audited. Set {flags}, or the ini key(s) {', '.join(keys)} (pytest read "
            f"{state.ini}{why if empty else ''}), or a gan_audit marker's arguments"
        )
    return AuditSettings(**values)


def with_outputs(
    state: SessionState, settings: AuditSettings, overrides: dict, node_name: str | None
) -> tuple[AuditSettings, list[Path]]:
    """Settings with their output paths, and the paths among them the user named.

    The configured audit writes the configured report; a test whose marker changes
    the settings writes its own `<report>-<test name>.html` unless the marker names one.
    """
    if "report" in overrides:
        report = Path(overrides["report"])
        json_path, named = report.with_suffix(".json"), [report]
    else:
        report = state.base["report"]
        json_path = state.base.get("json") or report.with_suffix(".json")
        named = [p for p in (report, json_path) if p in state.named]
        if node_name is not None and set(overrides) - {"json"}:
            safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in node_name)
            report = report.with_name(f"{report.stem}-{safe}{report.suffix}")
            json_path, named = report.with_suffix(".json"), []
    if "json" in overrides:
        json_path = Path(overrides["json"])
        named.append(json_path)
    return replace(settings, report=report, json=Path(json_path)), named


# --- the rootdir guard ---------------------------------------------------------------


def _space_form_values(args: list[str]) -> list[tuple[str, str]]:
    """(flag, value) of the --gan-audit-* options written `--flag value`: pytest reads
    the command line for its rootdir and ini file before this plugin is loaded, so it
    takes such a value for a test path (the `--flag=value` form is left out)."""
    flags = {f"--gan-audit-{o.flag}" for o in OPTIONS if o.kind != "bool"}
    return [
        (token, args[i + 1])
        for i, token in enumerate(args[:-1])
        if token in flags and not args[i + 1].startswith("-")
    ]


def _setup_without(config: pytest.Config) -> tuple[Any, Any] | None:
    """The (rootdir, ini file) pytest would have chosen had it known the values of our
    options for what they are; None when this pytest's private API is not the one
    known here."""
    import inspect

    try:
        from _pytest.config.findpaths import determine_setup

        wanted = {
            "inifile": config.option.inifilename,
            "override_ini": config.option.override_ini,
            "args": [str(a) for a in (config.option.file_or_dir or [])],
            "rootdir_cmd_arg": config.option.rootdir or None,
            "invocation_dir": Path(config.invocation_params.dir),
            "config": config,
        }
        accepted = inspect.signature(determine_setup).parameters
        found = determine_setup(**{k: v for k, v in wanted.items() if k in accepted})
        return Path(found[0]), (None if found[1] is None else Path(found[1]))
    except Exception:  # noqa: BLE001 - another pytest: fall back to a plainer check
        return None


def check_rootdir(config: pytest.Config) -> None:
    """Refuse a run whose rootdir and ini file pytest chose from the value of one of our
    options (`--gan-audit-used ../data/used`): the project's ini file, with its limit
    and paths, would be silently ignored, and pytest's cache written in a data folder."""
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    values = _space_form_values([str(a) for a in args])
    if not values:
        return
    expected = _setup_without(config)
    actual = (Path(config.rootpath), None if config.inipath is None else Path(config.inipath))
    if expected == actual:
        return
    if expected is None and not any(os.path.exists(v) for _, v in values):
        return  # no value names a path: pytest cannot have taken one for a test path
    fix = " ".join(f"{flag}={value}" for flag, value in values)
    read = f"the ini file {actual[1]}" if actual[1] else "no ini file"
    meant = ""
    if expected is not None:
        meant = " instead of " + (
            f"the ini file {expected[1]}" if expected[1] else f"the rootdir {expected[0]}"
        )
    raise pytest.UsageError(
        f"pytest chose its rootdir ({actual[0]}) and read {read}{meant}, because it took "
        f"the value of {values[0][0]} ({values[0][1]}) for a test path: it reads the command "
        "line for its ini file before this plugin is loaded. The project's gan_audit_* "
        f"settings would be ignored. Write the option with '=': {fix}"
    )
