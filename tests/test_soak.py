"""A short bounded soak (`scripts/bench/soak.py`): 200 devices syncing, pulling and listening
on the event stream against a real server process for a few seconds. No wall-clock figure
is asserted, only what must hold at any speed: no errors, no acknowledged sync lost, every
device's copy equal to its base, events delivered, every device synced at least once, and
the server's peak memory under the goal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.servers import REPO_ROOT

SOAK = REPO_ROOT / "scripts" / "bench" / "soak.py"


def test_two_hundred_devices_lose_nothing(tmp_path: Path) -> None:
    figures = tmp_path / "soak.json"
    short = "--devices 200 --writers 20 --seconds 8 --think 2 --settle 1 --shutdown-grace 5"
    done = subprocess.run(
        [sys.executable, str(SOAK), *short.split(), "--timeout", "60", "--json", str(figures)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert figures.exists(), done.stdout + done.stderr
    result = json.loads(figures.read_text())
    report = done.stdout + done.stderr

    assert result["errors"] == 0, (result["error_samples"], report)
    assert result["server"]["log_errors"] == 0, result["server"]["log_error_samples"]
    verification = result["verification"]
    assert verification["acknowledged_heads"] >= 200
    assert verification["lost"] == []
    assert verification["device_copies_checked"] == 200
    assert verification["device_copies_differ"] == []
    assert result["devices_without_sync"] == 0
    assert result["syncs_per_device"]["min"] >= 1
    assert result["events"]["received"] > 0
    assert result["events"]["for_own_novel_unseen_head"] > 0
    assert result["kinds"]["events"]["ok"] == result["listeners"] == 100
    assert result["kinds"]["pull"]["ok"] >= 200  # every device pulled its novel first
    assert 0 < result["server"]["peak_rss_mb"] < 300
    assert result["failures"] == []
    assert done.returncode == 0, report
