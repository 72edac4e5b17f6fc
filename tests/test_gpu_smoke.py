"""bench/gpu_smoke.sh, the script for the first GPU run: its dry mode (--cpu) runs every check end to end, and
one failing check neither stops the others nor hides in the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_bench

from hico.config import method_names

ROOT = Path(__file__).resolve().parent.parent


def test_a_failing_check_is_reported_and_the_next_one_runs(capsys):
    smoke = load_bench("gpu_smoke")
    results = []
    smoke.run_check(results, "first", lambda: "1 figure")
    smoke.run_check(results, "broken", lambda: 1 / 0)
    smoke.run_check(results, "last", lambda: "")
    assert [(r.check, r.passed) for r in results] == [("first", True), ("broken", False), ("last", True)]
    assert "ZeroDivisionError" in results[1].figures
    rows = smoke.table(results).splitlines()
    assert rows[2].split()[:2] == ["first", "PASS"] and rows[3].split()[:2] == ["broken", "FAIL"]
    assert rows[-1] == "2 passed, 1 failed"


def _table(stdout: str) -> dict[str, str]:
    """check -> status, from the final table (the rows between its header and the 'N passed' line)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("check ") and "status" in line)
    rows = {}
    for line in lines[start + 2 :]:
        if " passed, " in line:
            break
        name, status = line[: line.index("  ")], line[line.index("  ") :].split()[0]
        rows[name] = status
    return rows


@pytest.mark.slow  # a few minutes: every method, torchrun, a subprocess run stopped and resumed
def test_gpu_smoke_dry_mode_runs_every_check(tmp_path):
    env = {**os.environ, "HICO_CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "bench/gpu_smoke.sh", "--cpu", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = _table(proc.stdout)
    expected = ["env", "throughput", *(f"step {m}" for m in method_names()), "compile", "ctrl-c + resume"]
    expected += ["unused parts"]
    assert [c for c in expected if rows.get(c) != "PASS"] == []
    torchrun = [c for c in rows if c.startswith("torchrun ")]
    assert torchrun and all(rows[c] == "PASS" for c in torchrun)
    assert set(rows) == {*expected, *torchrun}
    assert not any(tmp_path.joinpath("out").glob("steps/*"))  # the passed runs' checkpoints are gone
