"""A pytest plugin: a skip or xfail that tests/allowed_skips.txt does not list fails the run.

Each entry of the allow-list is `<test node id glob> :: <why it may skip>` (fnmatch globs; lines starting
with `#` are comments). At the end of the session every skipped, xfailed or xpassed test (and every skipped
module) whose node id matches no glob is printed with its reason, and the exit status becomes "tests failed".
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

ALLOW_LIST = Path(__file__).with_name("allowed_skips.txt")


def pytest_addoption(parser):
    parser.addoption("--allowed-skips", default=str(ALLOW_LIST), metavar="PATH",
                     help="the skips that may happen, one `<test node id glob> :: <reason>` a line")


def pytest_configure(config):
    path = config.getoption("allowed_skips")
    config.pluginmanager.register(SkipGuard(path, read_allow_list(path), config.rootpath), "skip_guard_session")


def read_allow_list(path: str | Path) -> list[tuple[str, str]]:
    """(glob, reason) of every entry; a line that is not an entry with a reason is a usage error."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        glob, _, reason = (part.strip() for part in line.partition(" :: "))
        if not glob or not reason:
            raise pytest.UsageError(f"{path} line {number}: expected `<test node id glob> :: <why it may skip>`")
        entries.append((glob, reason))
    return entries


def skip_reason(report, root: os.PathLike) -> str:
    if hasattr(report, "wasxfail"):
        kind = "xpassed" if report.passed else "xfailed"
        return f"{kind}: {report.wasxfail or '(no reason given)'}"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: why")
        where = os.path.relpath(longrepr[0], root)
        return f"{longrepr[2]} ({longrepr[0] if where.startswith('..') else where}:{longrepr[1]})"
    return str(longrepr)


class SkipGuard:
    def __init__(self, path: str, allowed: list[tuple[str, str]], root: os.PathLike):
        self.path, self.allowed, self.root = path, allowed, root
        self.skips: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report):
        xpassed = report.passed and report.when == "call" and hasattr(report, "wasxfail")
        if report.skipped or xpassed:
            self.skips.append((report.nodeid, skip_reason(report, self.root)))

    def pytest_collectreport(self, report):
        if report.skipped:  # a module-level skip or importorskip: every test in it is gone
            self.skips.append((report.nodeid, skip_reason(report, self.root)))

    def unexpected(self) -> list[tuple[str, str]]:
        return [(node, why) for node, why in self.skips
                if not any(fnmatch.fnmatchcase(node, glob) for glob, _ in self.allowed)]

    def pytest_sessionfinish(self, session, exitstatus):
        if self.unexpected() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        unexpected = self.unexpected()
        if not unexpected:
            return
        terminalreporter.section("unexpected skips", sep="=", red=True, bold=True)
        for node, why in unexpected:
            terminalreporter.line(f"UNEXPECTED SKIP {node} - {why}", red=True)
        terminalreporter.line(f"{len(unexpected)} skip(s) not listed in {self.path}: the run fails. Fix the cause, "
                              "or list the test there with the reason it may skip.")
