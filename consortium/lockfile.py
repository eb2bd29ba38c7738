"""An exclusive lock on a file that a process holds while it writes, naming its holder.

Two processes appending to one journal interleave their lines and leave it damaged for good,
so every journal writer holds this lock for as long as it is open, and a second writer is
refused at once, with a message naming the process that holds it. The lock is a ``flock`` on
a ``<name>.lock`` file beside the guarded one: the kernel drops it when the holder dies, even
by SIGKILL, so a crash never leaves a stale lock behind. The lock file's text (pid, command
line, start time) only names the holder; the lock itself is the ``flock``.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from consortium.errors import ConsortiumError

MAX_HOLDER_TEXT = 512


class LockHeld(ConsortiumError):
    """Another process (or another writer in this one) holds the lock."""


class ExclusiveLock:
    """Holds ``<path>.lock`` exclusively from construction until :meth:`release` (or the end
    of a ``with`` block)."""

    def __init__(self, path: Path, what: str) -> None:
        """``what`` names the guarded thing in the refusal, e.g. "journal /x/journal.jsonl"."""
        self.path = path.with_name(path.name + ".lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(
                f"{what} is in use by {holder or 'another process'}; "
                "wait for it to finish, or stop it, and try again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode("utf-8", "replace"), 0)
        # A file object, not a bare descriptor: a writer dropped without being closed gives
        # its lock up when the object is collected.
        self._handle = os.fdopen(fd, "r+b", buffering=0)

    def __enter__(self) -> ExclusiveLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Gives the lock up; idempotent. The lock file stays, so that no other process can
        take a lock on a file that is about to be unlinked."""
        self._handle.close()


def _holder_text() -> str:
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"process {os.getpid()} ({command[:200]}) since {started}"


def _read_holder(fd: int) -> str:
    """The holder's own description, reduced to one printable line."""
    text = os.pread(fd, MAX_HOLDER_TEXT, 0).decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text.strip())
