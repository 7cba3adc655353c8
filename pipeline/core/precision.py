"""Which low precision the hardware runs natively: shared by training (`bf16: auto`) and scoring (`precision: auto`)."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private but long-standing; absent means no
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def native_bf16(use_cpu: bool = False) -> tuple[bool, str]:
    """Whether training here runs bf16 natively, and where ("CUDA GPU", "CPU with AVX512-BF16/AMX", or why not)."""
    if torch.cuda.is_available() and not use_cpu:
        if torch.cuda.is_bf16_supported():
            return True, "bf16-capable CUDA GPU"
        return False, "this GPU has no bf16"
    if torch.accelerator.is_available() and not use_cpu:  # MPS, XPU...: not measured here, keep fp32
        return False, f"{torch.accelerator.current_accelerator()} not measured with bf16"
    if cpu_has_native_bf16():
        return True, "CPU with AVX512-BF16/AMX"
    return False, "this CPU has no bf16 hardware (AVX512-BF16/AMX); bf16 would be emulated and slower"
