"""A stand-in for PyTorch in the emulator's "pytorch" runtime: pure Python and small.

It implements only what examples/manifests/gpu-training.yaml's train step uses: torch.device,
torch.randn, torch.nn.Linear, torch.optim.SGD, Tensor.pow/mean/backward/item/to, and
torch.cuda.is_available/device_count/get_device_name. It computes real (if slow) values, but it
is no deep-learning library: its whole point is to let an e2e test check that a Flow's typed
parameters and its GPU assignment reach the task. Like CUDA, it sees the GPUs that
NVIDIA_VISIBLE_DEVICES names (which the emulator sets for jobs that ask Batch for GPUs, as the
ECS agent does); with none, torch.cuda.is_available() is False and moving a tensor or a model to
"cuda" fails as real PyTorch does on a machine without a GPU.
"""

from __future__ import annotations

import random

from . import cuda, nn, optim
from ._tensor import Tensor, device

__version__ = "2.5.1+flowline.emulator"
__all__ = ["Tensor", "cuda", "device", "nn", "optim", "randn", "tensor"]


def randn(*shape: int, device: str | "device" | None = None, requires_grad: bool = False) -> Tensor:
    """A tensor of standard normal samples."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    count = 1
    for size in shape:
        count *= size
    result = Tensor([random.gauss(0.0, 1.0) for _ in range(count)], tuple(shape), requires_grad=requires_grad)
    return result.to(device) if device is not None else result


def tensor(values: list | float, requires_grad: bool = False) -> Tensor:
    """A tensor from a (nested) list of numbers."""
    shape: list[int] = []
    probe = values
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else 0.0
    flat: list[float] = []

    def walk(item: list | float) -> None:
        if isinstance(item, list):
            for inner in item:
                walk(inner)
        else:
            flat.append(float(item))

    walk(values)
    return Tensor(flat, tuple(shape), requires_grad=requires_grad)
