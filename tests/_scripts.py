"""Running the project's scripts as real subprocesses, offline (shared by the script tests)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
#: `accelerate launch` with one CPU process, as a user would type it.
ACCELERATE_ONE_CPU = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--mixed_precision", "no"]


def offline_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # the checkout, and the tests' helper modules (_training, conftest) for the scripts that tests/*/ launch
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def run_script(cmd: list[str], cwd=None) -> subprocess.CompletedProcess:
    """Run ``cmd`` offline; fail the test with the tail of its output when it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=offline_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
