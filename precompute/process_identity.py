"""A process told apart from a later one that reuses its PID: the PID with its start time.

Run records name the process holding a stage this way, and the local platform its services.
"""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22); None when
    there is no such process. A PID is reused; a PID with its start time is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count after it.
    return stat.rpartition(")")[2].split()[19]
