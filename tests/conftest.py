"""Suite-wide setup.

- Without CUDA, Triton kernels run under the interpreter. Triton reads TRITON_INTERPRET when a kernel is decorated
  (module import), so it must be set before any test module imports unique_asr.
- Under CI=true a skipped test is a failure unless its reason is the missing CUDA device: a test that cannot run
  where CI runs checks nothing, so it must not pass silently (issue 17). GPU tests say "CUDA" in their reason.
"""

import os
import re

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_NO_CUDA = re.compile(r"\bCUDA\b|\bGPU\b")


def allowed_skip(reason: str) -> bool:
    """The only skip CI accepts: a GPU test on a machine without a CUDA device."""
    return not torch.cuda.is_available() and bool(_NO_CUDA.search(reason))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not allowed_skip(reason):
            report.outcome = "failed"
            report.longrepr = (f"skipped under CI=true for a reason other than a missing CUDA device: {reason!r}. "
                               "A test that cannot run where CI runs must provide what it needs.")
