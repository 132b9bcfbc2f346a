"""CPU time as the benchmarks count it: of another process (/proc), of the whole machine
(/proc/stat), of this process (``os.times``) and of this process with its context switches
(``getrusage``).

Every figure is user + system time, so ZeroMQ's I/O thread and ONNX Runtime's threads are counted
with the process they run in. Reading these never changes what is measured; it only reads the
kernel's counters.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """This process's utime+stime (all its threads, ZeroMQ's I/O thread included)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True, slots=True)
class Usage:
    """This process's CPU and context switches (``getrusage(RUSAGE_SELF)``), or a difference."""

    user: float
    sys: float
    switches: int

    @staticmethod
    def now() -> Usage:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return Usage(r.ru_utime, r.ru_stime, r.ru_nvcsw + r.ru_nivcsw)

    def since(self, start: Usage) -> Usage:
        return Usage(self.user - start.user, self.sys - start.sys, self.switches - start.switches)

    @property
    def cpu(self) -> float:
        return self.user + self.sys
