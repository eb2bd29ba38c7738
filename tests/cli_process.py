"""Running ``consortium`` as its own process, for inputs that could hang or flood the caller.

A FIFO or a device given as a file would block a test run in process, or fill its memory, if a
command ever read it again; run in a child with a deadline and a memory cap, such a regression
fails the test instead.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

TIMEOUT = 20
"""Seconds a command may take before it counts as hanging; a refusal takes about two."""
MEMORY_CAP = 4 * 2**30
"""The address space the child may map: ample for the CLI, far below what reading a device
without end would take."""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_cli_process(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``consortium ARGS`` run in ``directory`` with none of the caller's ``CONSORTIUM_*``
    settings, a fast scrypt and a known password, as :func:`conftest.isolate_cli` sets up."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSORTIUM_")}
    env.update(CONSORTIUM_SCRYPT_N="1024", CONSORTIUM_PASSWORD="pw")
    return subprocess.run(
        [sys.executable, "-c", "from consortium.cli.main import main; main()", *args],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_cap_memory,
        check=False,
    )


def one_line_error(process: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line of a command that failed with exit code 2."""
    assert process.returncode == 2, (process.returncode, process.stderr)
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
