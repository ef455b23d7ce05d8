"""The dependency audit says what it checked: a pass only when every package was audited."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "audit_report.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit = _load()


def _skipped(name: str) -> dict[str, Any]:
    reason = f"Dependency not found on PyPI and could not be audited: {name} (1.0)"
    return {"name": name, "skip_reason": reason}


def _audited(name: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "vulns": list(vulns)}


def _run(tmp_path: Path, report: object) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "requirements/dev.txt", "0"],
        capture_output=True,
        text=True,
    )


def test_nothing_audited_is_not_a_pass(tmp_path: Path) -> None:
    # What pip-audit writes (and calls "No known vulnerabilities found") with
    # no vulnerability database in reach.
    report = {"dependencies": [_skipped(name) for name in ("celery", "redis", "waitress")]}

    out = _run(tmp_path, report)

    assert out.returncode == audit.NOT_AUDITED != 0
    assert out.stdout.splitlines() == [
        "audit: skipped: none of the 3 locked packages could be audited "
        "(no vulnerability database answered)"
    ]
    assert "passed" not in out.stdout


def test_a_partly_audited_set_is_not_a_pass() -> None:
    code, lines = audit.judge({"dependencies": [_audited("celery"), _skipped("waitress")]})

    assert code == audit.NOT_AUDITED
    assert lines == [
        "audit: incomplete: 1 of 2 locked packages could not be audited (waitress); "
        "no known vulnerabilities in the other 1"
    ]


def test_a_known_vulnerability_fails_naming_it() -> None:
    vuln = {"id": "GHSA-xxxx", "fix_versions": ["3.0.1"], "description": "..."}

    code, lines = audit.judge(
        {"dependencies": [_audited("waitress", vuln), _audited("celery"), _skipped("x")]}
    )

    assert code == audit.VULNERABLE
    assert lines[0] == "audit: waitress 1.0: GHSA-xxxx (fixed in 3.0.1)"
    assert lines[-1] == "audit: failed: 1 known vulnerabilities in the locked set"


def test_every_package_audited_and_clean_passes() -> None:
    code, lines = audit.judge({"dependencies": [_audited("celery"), _audited("redis")]})

    assert code == audit.PASSED
    assert lines == ["audit: passed: 2 locked packages, no known vulnerabilities"]


@pytest.mark.parametrize("report", [{}, {"dependencies": []}, [], "garbage"])
def test_an_empty_or_malformed_report_is_no_pass(tmp_path: Path, report: object) -> None:
    out = _run(tmp_path, report)

    assert out.returncode == audit.NO_REPORT
    assert out.stdout.startswith("audit: failed:")


def test_a_missing_report_is_no_pass(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none.json"), "requirements/dev.txt", "1"],
        capture_output=True,
        text=True,
    )

    assert out.returncode == audit.NO_REPORT
    assert out.stdout.strip() == (
        "audit: failed: pip-audit wrote no report for requirements/dev.txt (exit 1)"
    )
