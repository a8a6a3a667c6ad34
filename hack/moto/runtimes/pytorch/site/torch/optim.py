"""torch.optim of the stand-in: plain SGD."""

from __future__ import annotations

from typing import Iterable

from ._tensor import Tensor


class SGD:
    def __init__(self, params: Iterable[Tensor], lr: float = 0.001) -> None:
        self.params = list(params)
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for parameter in self.params:
            parameter.grad = None

    def step(self) -> None:
        for parameter in self.params:
            if parameter.grad is not None:
                data, grad = parameter.data, parameter.grad.data
                for index, value in enumerate(grad):
                    data[index] -= self.lr * value
