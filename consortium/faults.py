"""Named crash points, for proving that a killed coordinator resumes correctly.

With ``CONSORTIUM_KILL_AT=<point>:<round>`` in the environment, the process sends itself
SIGKILL when it reaches that point of that round: no cleanup, no flush, no exception handler,
exactly like a power cut of the process. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "CONSORTIUM_KILL_AT"

# In the order a round reaches them; the resume test kills the coordinator at each.
POINTS = (
    "opened",  # round-open journaled, no update collected yet
    "collected",  # updates checked and stored, nothing aggregated
    "intent",  # anchor intent journaled: root, model and metrics durable
    "signed",  # anchor transaction signed and journaled, not sent
    "sent",  # anchor transaction sent, receipt not seen
    "anchored",  # anchor mined and journaled, receipts not delivered
    "delivered",  # receipts delivered and journaled
)


def crash_point(point: str, round_number: int) -> None:
    """Kills this process here if the environment asks for it."""
    if os.environ.get(KILL_AT_ENV) == f"{point}:{round_number}":
        os.kill(os.getpid(), signal.SIGKILL)
