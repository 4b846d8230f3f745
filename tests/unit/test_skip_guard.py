"""The skip guard (tests/skip_guard.py): a real pytest run, through pytester, of tiny test files."""

from __future__ import annotations

import pytest
import skip_guard

TESTS = """
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_skipped():
    pytest.skip("not today")

@pytest.mark.xfail(reason="known bug 12")
def test_expected_to_fail():
    assert False
"""


def run(pytester, allowed: str, source: str = TESTS):
    pytester.makepyfile(test_a=source)
    allow_list = pytester.path / "allowed.txt"
    allow_list.write_text(allowed)
    return pytester.runpytest_inprocess("-p", "skip_guard", f"--allowed-skips={allow_list}", "-rs")


def test_an_unlisted_skip_and_xfail_fail_the_run_and_are_named(pytester):
    result = run(pytester, "# nothing may skip\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*= unexpected skips =*",
        "UNEXPECTED SKIP test_a.py::test_skipped - Skipped: not today (test_a.py:7)",
        "UNEXPECTED SKIP test_a.py::test_expected_to_fail - xfailed: known bug 12",
        "2 skip(s) not listed in *allowed.txt: the run fails.*",
    ])


def test_listed_skips_pass(pytester):
    result = run(pytester, "test_a.py::test_skip* :: a reason\n# a comment\n"
                           "*::test_expected_to_fail :: bug 12 is not fixed yet\n")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert "UNEXPECTED SKIP" not in result.stdout.str()


def test_one_listed_skip_does_not_excuse_another(pytester):
    result = run(pytester, "test_a.py::test_skipped :: a reason\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNEXPECTED SKIP test_a.py::test_expected_to_fail - xfailed: known bug 12"])
    result.stdout.no_fnmatch_line("UNEXPECTED SKIP test_a.py::test_skipped *")


def test_a_skipped_module_and_an_xpass_count(pytester):
    source = "import pytest\npytest.importorskip('no_such_module_here')\n"
    pytester.makepyfile(test_b="import pytest\n\n@pytest.mark.xfail(reason='flaky')\ndef test_x():\n    pass\n")
    result = run(pytester, "", source)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNEXPECTED SKIP test_a.py - *could not import 'no_such_module_here'*",
                                 "UNEXPECTED SKIP test_b.py::test_x - xpassed: flaky"])


def test_a_failing_run_keeps_its_status(pytester):
    result = run(pytester, "", "import pytest\n\ndef test_f():\n    pytest.skip('x')\n\ndef test_g():\n    assert 0\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNEXPECTED SKIP test_a.py::test_f - Skipped: x *"])


def test_an_entry_without_a_reason_is_refused(pytester):
    result = run(pytester, "test_a.py::test_skipped\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allowed.txt line 1: expected `<test node id glob> :: <why it may skip>`*"])


def test_the_projects_allow_list_reads_and_gives_every_entry_a_reason():
    for glob, reason in skip_guard.read_allow_list(skip_guard.ALLOW_LIST):
        assert glob.startswith("tests/") and len(reason) >= 10, (glob, reason)
