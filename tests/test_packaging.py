"""A plain `pip install` (no checkout around it) still finds the shipped blocklists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_installed_package_carries_the_shipped_blocklists(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir\n"
        "d = shipped_blocklist_dir()\n"
        "m = load_blocklists([d])\n"
        "print(d)\n"
        "print(m.match_name('app.clearview.ai').indicator.vendor.id)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(target))
    assert out[1] == "clearview-ai"
