"""torch.cuda of the stand-in: the GPUs are those NVIDIA_VISIBLE_DEVICES names."""

from __future__ import annotations

import os

_NONE = ("", "none", "void")


def _devices() -> list[str]:
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if visible.lower() in _NONE:
        return []
    return [item.strip() for item in visible.split(",") if item.strip()]


def is_available() -> bool:
    return bool(_devices())


def device_count() -> int:
    return len(_devices())


def get_device_name(index: int = 0) -> str:
    devices = _devices()
    if not devices:
        raise RuntimeError("Found no NVIDIA driver on your system (NVIDIA_VISIBLE_DEVICES names no GPU)")
    if not 0 <= int(index) < len(devices):
        raise RuntimeError(f"CUDA error: invalid device ordinal {index} (visible: {len(devices)})")
    return f"Emulated GPU {devices[int(index)]}"
