"""Judge a pip-audit JSON report of the lock file, saying only what was checked.

    python .ci/audit_report.py REPORT.json LOCK.txt [PIP_AUDIT_EXIT]

pip-audit reports a pass when its vulnerability database is out of reach:
every package is then skipped as "not found", and none is audited. This
prints one line and exits:

- 0: every locked package was audited and none has a known vulnerability;
- 1: a package has a known vulnerability (one line each, then the summary);
- 2: there is no readable report (pip-audit itself failed);
- 3: nothing, or not everything, could be audited: the audit did not pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PASSED, VULNERABLE, NO_REPORT, NOT_AUDITED = 0, 1, 2, 3


def judge(report: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit code and the lines to print for one pip-audit JSON report."""
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        return NO_REPORT, ["audit: failed: the report lists no dependency"]
    skipped = [dep for dep in dependencies if dep.get("skip_reason")]
    audited = [dep for dep in dependencies if not dep.get("skip_reason")]
    lines = []
    for dep in audited:
        for vuln in dep.get("vulns") or []:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            lines.append(
                f"audit: {dep['name']} {dep.get('version', '?')}: {vuln.get('id', '?')} "
                f"(fixed in {fixes})"
            )
    if lines:
        return VULNERABLE, [
            *lines,
            f"audit: failed: {len(lines)} known vulnerabilities in the locked set",
        ]
    if not audited:
        return NOT_AUDITED, [
            f"audit: skipped: none of the {len(dependencies)} locked packages could be "
            "audited (no vulnerability database answered)"
        ]
    if skipped:
        names = ", ".join(sorted(str(dep.get("name")) for dep in skipped))
        return NOT_AUDITED, [
            f"audit: incomplete: {len(skipped)} of {len(dependencies)} locked packages "
            f"could not be audited ({names}); no known vulnerabilities in the other "
            f"{len(audited)}"
        ]
    return PASSED, [f"audit: passed: {len(audited)} locked packages, no known vulnerabilities"]


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: audit_report.py REPORT.json LOCK.txt [PIP_AUDIT_EXIT]", file=sys.stderr)
        return NO_REPORT
    report_path, lock = Path(argv[1]), argv[2]
    tool_exit = argv[3] if len(argv) == 4 else "?"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        print(f"audit: failed: pip-audit wrote no report for {lock} (exit {tool_exit})")
        return NO_REPORT
    code, lines = judge(report if isinstance(report, dict) else {})
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
