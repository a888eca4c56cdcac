"""Running the real command-line tools (git, dvc, imrestore) from tests, with this venv's first on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def sh(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `args` in `cwd`; with `check`, a non-zero exit fails the test with what the command printed.

    PYTHONPATH is cleared so the tools import the installed package, as a user's shell would; DVC's analytics
    are off, as nothing here may reach the network."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": "",
           "DVC_NO_ANALYTICS": "1", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
