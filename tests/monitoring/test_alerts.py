"""The example alert rules (docs/monitoring/alerts.yml) checked and unit-tested by Debian's
promtool, as an operator's CI would before loading them: every alert has a test in which it
fires (tests/monitoring/alerts_test.yml), with its labels and annotations as written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docs" / "monitoring" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "monitoring" / "alerts_test.yml"


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *arguments], capture_output=True, text=True, check=False, cwd=REPO
    )


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_test_passes():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_fires_in_some_test():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert alerts, RULES
    assert alerts <= fired, f"alerts no test sees fire: {sorted(alerts - fired)}"
