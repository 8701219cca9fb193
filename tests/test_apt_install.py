"""scripts/apt_install.sh: two installs started together (.ci/run runs `make test` and `make databricks-test` side
by side, each of which may install packages on a fresh machine) run one after the other, never inside each other:
a second apt-get would fail on the first's dpkg lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "apt_install.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the script installs as root or through sudo; this fake apt-get needs root")
def test_two_installs_at_once_take_turns(tmp_path):
    journal = tmp_path / "journal"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(f"#!/bin/sh\necho \"start $$ $*\" >> {journal}\nsleep 0.3\necho \"end $$\" >> {journal}\n")
    (fake / "apt-get").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    installs = [subprocess.Popen(["bash", str(SCRIPT), f"install {n}", f"package-{n}"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(2)]
    assert [install.wait(timeout=30) for install in installs] == [0, 0]
    events = [line.split()[0] for line in journal.read_text().splitlines()]
    assert events == ["start", "end"] * 4  # update, install; update, install: never two at once
    lines = journal.read_text().splitlines()
    assert sum("install -y -qq package-" in line for line in lines) == 2
