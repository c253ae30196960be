"""The scenario library: every file in ``scenarios/`` validates, and ``smtpbench scenarios`` lists them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "scenarios").glob("*.toml"))


def smtpbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtpbench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_library_is_there():
    names = {f.stem for f in FILES}
    assert {"quickstart", "max-throughput", "latency-at-rate", "big-messages", "many-recipients",
            "capacity-sweep"} <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario_validates(path):
    proc = smtpbench("validate", str(path.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path.relative_to(ROOT)}: ok — ") and not proc.stderr


def test_scenarios_lists_every_file_with_its_description():
    proc = smtpbench("scenarios")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(FILES)
    for path, line in zip(FILES, lines):
        assert line.startswith(f"scenarios/{path.name}") and "INVALID" not in line, line
        assert len(line.split(maxsplit=1)) == 2, f"{path.name} has no description"
