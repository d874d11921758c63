"""Where a torch model runs and in what precision: shared by every model kind torch runs.

`--device` and `--dtype` mean the same for the NLI model and every classifier in a rules file,
so they are resolved here once, not per model kind.
"""

from __future__ import annotations

import os

from crossguard_cli.engine.options import DTYPES
from crossguard_cli.errors import UsageError

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str) -> str:
    """Turn `auto` into the best available device and check an explicit one exists."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise UsageError(f"--device: {device!r} is not a device; use {DEVICES_HELP}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return device
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps: MPS is not available here; use --device cpu or auto")
        return device
    raise UsageError(f"--device: {device!r} is not a device; use {DEVICES_HELP}")


def native_bf16_cpu(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), as the CPU reports.

    Without them torch emulates bf16 matmuls, several times slower than fp32 (measured: 6x on
    an AVX2-only EPYC); with them, about 2x faster than fp32 (benchmarks/RESULTS.md).
    `CROSSGUARD_CPU_BF16=1` or `=0` overrides what is read (a VM may hide CPU flags).

    Args:
        cpuinfo: the text of /proc/cpuinfo (read when None; not Linux: no native bf16 assumed).
    """
    forced = os.environ.get("CROSSGUARD_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.partition(":")[2].split()))
    return False


def resolve_dtype(dtype: str, device: str):
    """`auto`: bfloat16 on CUDA when supported (else float16); on a CPU, bfloat16 where it has
    native bf16 matmuls, else float32. float32 is the exact path."""
    import torch

    dtype = (dtype or "auto").lower()
    if dtype not in DTYPES:
        raise UsageError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu" and native_bf16_cpu():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


__all__ = ["DEVICES_HELP", "native_bf16_cpu", "resolve_device", "resolve_dtype"]
