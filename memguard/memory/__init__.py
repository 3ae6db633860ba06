"""Reading memory: samples, probes (process, cgroup), the heap figure, allocators and reclaim."""

from memguard.memory.probes import CgroupProbe, ProcessProbe, make_probe
from memguard.memory.reclaim import reclaim
from memguard.memory.samples import MemorySample, Probe

__all__ = [
    "CgroupProbe",
    "MemorySample",
    "Probe",
    "ProcessProbe",
    "make_probe",
    "reclaim",
]
