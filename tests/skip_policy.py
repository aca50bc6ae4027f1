"""A suite that cannot go quietly green: a test may skip only for a reason on this list (hardware or
privileges a machine may lack, which no install fixes). Any other skip, such as a broken vLLM or
DeepSpeed import turning importorskip into a skip, fails the session after the summary names it.
LLM2LLM_STRICT_SKIPS=0 turns the check off (on a machine you know lacks something).

A pytest plugin: tests/conftest.py takes its hooks; tests/test_style.py runs it on files of its own."""

from __future__ import annotations

import os

import pytest

# A substring of the skip's reason -> why such a skip is allowed.
ALLOWED_SKIPS = {
    "no NVIDIA driver on this machine": "GPU-only: the NVML release check needs a GPU",
    "giving a folder to another user needs root": "privileges: chown to another user",
    "needs root and unshare -m": "privileges: a size-limited tmpfs in a mount namespace",
    "no tmpfs mount here": "the kernel: no tmpfs to mount",
    "(a network namespace) is not available here": "privileges: unshare -n",
    "classification only": "a parametrised case that does not apply to the task type",
}

_unexpected: list[str] = []


def is_allowed(reason: str) -> bool:
    return any(allowed in reason for allowed in ALLOWED_SKIPS)


def _reason(report) -> str:
    longrepr = report.longrepr
    return (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and not is_allowed(reason := _reason(report)):
        _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module-level skip (pytest.importorskip of a package that does not import) skips at collection."""
    if report.skipped and not is_allowed(reason := _reason(report)):
        _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter) -> None:
    if _unexpected and os.environ.get("LLM2LLM_STRICT_SKIPS", "1") != "0":
        terminalreporter.section("skips not on tests/skip_policy.py's list (they fail the session)")
        for line in _unexpected:
            terminalreporter.line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    quiet = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)  # green, or nothing left to run
    if _unexpected and os.environ.get("LLM2LLM_STRICT_SKIPS", "1") != "0" and exitstatus in quiet:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
