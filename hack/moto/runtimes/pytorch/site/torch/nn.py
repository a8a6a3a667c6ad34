"""torch.nn of the stand-in: Module and Linear."""

from __future__ import annotations

import math
import random

from ._tensor import Tensor, check_device


class Module:
    def parameters(self) -> list[Tensor]:
        return [value for value in vars(self).values() if isinstance(value, Tensor) and value.requires_grad]

    def to(self, target: object) -> "Module":
        dev = check_device(target)  # type: ignore[arg-type]
        for parameter in self.parameters():
            parameter.device = dev
        return self

    def __call__(self, *args: Tensor) -> Tensor:
        return self.forward(*args)

    def forward(self, *args: Tensor) -> Tensor:
        raise NotImplementedError


class Linear(Module):
    """y = x W^T + b for x of shape (n, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        bound = 1.0 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Tensor(
            [random.uniform(-bound, bound) for _ in range(out_features * in_features)],
            (out_features, in_features),
            requires_grad=True,
        )
        self.bias = Tensor([random.uniform(-bound, bound) for _ in range(out_features)], (out_features,), requires_grad=bias)

    def forward(self, x: Tensor) -> Tensor:
        n, width = x.shape
        if width != self.in_features:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({n}x{width} and {self.in_features}x{self.out_features})")
        rows = [x.data[r * width : (r + 1) * width] for r in range(n)]
        weights = [self.weight.data[o * width : (o + 1) * width] for o in range(self.out_features)]
        bias = self.bias.data
        out = [sum(map(float.__mul__, row, w)) + bias[o] for row in rows for o, w in enumerate(weights)]
        outs = self.out_features

        def backward(grad: list[float]) -> list[tuple[Tensor, list[float]]]:
            grad_w = [0.0] * (outs * width)
            grad_b = [0.0] * outs
            for r, row in enumerate(rows):
                for o in range(outs):
                    g = grad[r * outs + o]
                    if g:
                        grad_b[o] += g
                        base = o * width
                        for i, value in enumerate(row):
                            grad_w[base + i] += g * value
            return [(self.weight, grad_w), (self.bias, grad_b)]

        result = Tensor(out, (n, outs), parents=(self.weight, self.bias), backward=backward)
        result.device = x.device
        return result
