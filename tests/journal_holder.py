"""A journal held open by another process, as a running coordinator holds it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLD = """
import sys, time
from pathlib import Path
from consortium.store.journal import Journal
journal = Journal(Path(sys.argv[1]))
print("holding", flush=True)
time.sleep(120)
"""


@contextmanager
def journal_held_elsewhere(path: Path) -> Iterator[int]:
    """Yields the pid of a process holding ``path`` as its writer; kills it (SIGKILL, as a
    crash would) on exit."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(10)
