"""What the CPU is, read from ``/proc/cpuinfo`` (Linux): its model name and its ISA flags, which
decide the kernels that run (AVX-512, bf16 and int8 vector instructions, AMX matrix units)."""

from __future__ import annotations

import functools
import platform
import re
from typing import FrozenSet

__all__ = ["cpu_flags", "cpu_model_name", "bf16_support", "int8_support"]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_flags() -> FrozenSet[str]:
    """The CPU's flags (``avx512_bf16``, ``amx_bf16``, ...); empty where /proc/cpuinfo is absent."""
    line = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.M)
    return frozenset(line.group(1).split()) if line else frozenset()


def cpu_model_name() -> str:
    """The CPU's model name (e.g. ``AMD EPYC``), or the platform's processor string."""
    name = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return name.group(1).strip() if name else (platform.processor() or "unknown CPU")


def bf16_support() -> str:
    """How this CPU runs bf16 arithmetic: ``"amx"`` (AMX tiles: Intel Sapphire Rapids and
    later), ``"avx512_bf16"`` (bf16 dot products in AVX-512: e.g. AMD Zen 4, Intel Cooper
    Lake), or ``"emulated"`` (neither: oneDNN and OpenVINO convert to f32 and back, which is
    slower than f32; OpenVINO's CPU plugin then runs f32 whatever the hint)."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "emulated"


def int8_support() -> str:
    """How this CPU runs int8 convolutions: ``"amx"`` (AMX int8 tiles), ``"avx512_vnni"`` or
    ``"avx_vnni"`` (8-bit dot products accumulating in int32, one instruction), or ``"no VNNI"``
    (OpenVINO's CPU plugin still runs int8, on AVX2 / AVX-512 multiply-add sequences, which may
    be no faster than f32)."""
    flags = cpu_flags()
    for flag, name in (("amx_int8", "amx"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni")):
        if flag in flags:
            return name
    return "no VNNI"
