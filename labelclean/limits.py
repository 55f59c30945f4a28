"""Figures the settings derive from the machine and from each other (base layer, like the
settings: anyone may import it). ``labelclean.settings`` names them too."""

from __future__ import annotations

import os

__all__ = ["usable_cpus", "worker_heartbeat_s"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_heartbeat_s(claim_idle_s: float) -> float:
    """How often a worker beats and touches the message it holds: three times per
    ``claim_idle_s``, at most every 5 s, at least every 0.2 s."""
    return max(0.2, min(5.0, claim_idle_s / 3))
