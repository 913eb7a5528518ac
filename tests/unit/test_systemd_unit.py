"""deploy/edgewatch.service: the hardening the README promises is in the unit, and systemd accepts
every line of it (``systemd-analyze verify`` / ``security --offline``, where systemd is installed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "edgewatch.service"
INSTALLED_EDGEWATCH = "/opt/edgewatch/venv/bin/edgewatch"

Sections = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Sections:
    """Sections → key → every value in order. systemd repeats keys (``SystemCallFilter=``) and
    an empty value resets a list, which ``configparser`` can't represent."""
    sections: Sections = defaultdict(lambda: defaultdict(list))
    section = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"line {number} is not key=value in a section: {raw}"
        sections[section][key.strip()].append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> Sections:
    return parse_unit(UNIT.read_text())


def one(unit: Sections, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times: {values}"
    return values[0]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("User", "edgewatch"),
        ("Group", "edgewatch"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "edgewatch"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("DevicePolicy", "closed"),
        ("Restart", "on-failure"),
        ("UMask", "0077"),
    ],
)
def test_the_service_runs_sandboxed_as_an_unprivileged_user(
    unit: Sections, key: str, expected: str
) -> None:
    assert one(unit, "Service", key) == expected


def test_writable_state_read_only_config_and_code(unit: Sections) -> None:
    service = unit["Service"]
    assert service["ReadWritePaths"] == ["/var/lib/edgewatch"]
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/edgewatch"
    read_only = " ".join(service["ReadOnlyPaths"]).split()
    assert {"/etc/edgewatch", "/opt/edgewatch"} <= set(read_only)
    assert (
        one(unit, "Service", "ExecStart") == f"{INSTALLED_EDGEWATCH} run /etc/edgewatch/device.yaml"
    )


def test_system_calls_are_filtered_to_ordinary_service_ones(unit: Sections) -> None:
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert "~@privileged" in filters
    assert "" not in filters  # an empty value would reset the list
    assert one(unit, "Service", "SystemCallArchitectures") == "native"


def test_restarts_are_rate_limited_and_memory_is_capped(unit: Sections) -> None:
    assert float(one(unit, "Service", "RestartSec").removesuffix("s")) >= 1
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 1
    assert int(one(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert one(unit, "Service", "MemoryMax").endswith(("M", "G"))
    assert one(unit, "Service", "TimeoutStopSec")
    # edgewatch doesn't call sd_notify, so a watchdog would kill a healthy service
    assert "WatchdogSec" not in unit["Service"]
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_secrets_come_from_a_root_only_environment_file(unit: Sections) -> None:
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/edgewatch/edgewatch.env"
    assert "Environment" not in unit["Service"]  # nothing secret inline in the unit


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_line_and_rates_the_sandbox_ok(tmp_path: Path) -> None:
    """``verify`` checks that ExecStart= exists, so the copy runs this venv's ``edgewatch``;
    everything else is the shipped unit. systemd reports a bad line on stderr and still exits 0,
    so any output at all fails the test."""
    assert SYSTEMD_ANALYZE is not None
    here = Path(sys.executable).parent / "edgewatch"
    assert here.exists(), f"{here} missing: install the package into the venv (pip install -e .)"
    copy = tmp_path / "edgewatch.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_EDGEWATCH, str(here)))

    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # exposure is 0-10 in the report and 0-100 for --threshold: fail above 2.0 ("OK" is < 4.0)
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    verdict = security.stdout.strip().splitlines()[-1:]
    assert security.returncode == 0, verdict or security.stderr
    assert security.stderr == ""
