from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support import STRICT_ENVIRONMENT_VARIABLE, strict


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under strict mode no test may skip: whatever the reason, it becomes a failure."""
    report = yield
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under {STRICT_ENVIRONMENT_VARIABLE}=1: {report.longrepr}"
    return report
