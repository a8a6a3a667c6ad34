"""The stand-in's Tensor: a flat list of floats with a shape, and just enough autograd for
``Linear -> pow -> mean -> backward``."""

from __future__ import annotations

from typing import Callable, Iterable


Backward = Callable[[list[float]], "list[tuple[Tensor, list[float]]]"]


class device:  # noqa: N801 - torch's name
    """torch.device: a type ("cpu" or "cuda") and an optional index."""

    def __init__(self, spec: "str | device") -> None:
        text = spec.type if isinstance(spec, device) else str(spec)
        self.type, _, index = text.partition(":")
        if self.type not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {text}")
        self.index = int(index) if index else None

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")


def check_device(target: "str | device | None") -> device:
    """A device a tensor may move to: "cuda" only when a GPU is visible, as with real CUDA."""
    from . import cuda

    dev = device(target or "cpu")
    if dev.type == "cuda" and not cuda.is_available():
        raise RuntimeError("Found no NVIDIA driver on your system (NVIDIA_VISIBLE_DEVICES names no GPU)")
    return dev


class Tensor:
    def __init__(
        self,
        data: list[float],
        shape: tuple[int, ...],
        requires_grad: bool = False,
        parents: Iterable["Tensor"] = (),
        backward: "Backward | None" = None,
    ) -> None:
        self.data = data
        self.shape = tuple(shape)
        self.requires_grad = requires_grad or any(p.requires_grad for p in parents)
        self.grad: Tensor | None = None
        self.device = device("cpu")
        self._parents = tuple(parents)
        self._backward = backward

    def to(self, target: "str | device | None") -> "Tensor":
        self.device = check_device(target)
        return self

    def size(self) -> tuple[int, ...]:
        return self.shape

    def item(self) -> float:
        if len(self.data) != 1:
            raise RuntimeError(f"a Tensor with {len(self.data)} elements cannot be converted to Scalar")
        return self.data[0]

    def _accumulate(self, grad: list[float]) -> None:
        if self.grad is None:
            self.grad = Tensor([0.0] * len(self.data), self.shape)
        current = self.grad.data
        for index, value in enumerate(grad):
            current[index] += value

    def pow(self, exponent: float) -> "Tensor":
        data = [value**exponent for value in self.data]

        def backward(grad: list[float]) -> list[tuple[Tensor, list[float]]]:
            return [(self, [g * exponent * v ** (exponent - 1) for g, v in zip(grad, self.data)])]

        return self._derived(data, self.shape, backward)

    def mean(self) -> "Tensor":
        count = len(self.data)

        def backward(grad: list[float]) -> list[tuple[Tensor, list[float]]]:
            return [(self, [grad[0] / count] * count)]

        return self._derived([sum(self.data) / count], (), backward)

    def _derived(self, data: list[float], shape: tuple[int, ...], backward: Backward) -> "Tensor":
        result = Tensor(data, shape, parents=(self,), backward=backward)
        result.device = self.device
        return result

    def backward(self) -> None:
        """Reverse-mode autograd from a scalar, as torch's ``loss.backward()``: gradients flow
        through the recorded operations into the leaf tensors that require them."""
        if len(self.data) != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        order: list[Tensor] = []
        seen: set[int] = set()

        def visit(node: Tensor) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            for parent in node._parents:
                visit(parent)
            order.append(node)

        visit(self)
        pending: dict[int, list[float]] = {id(self): [1.0]}
        for node in reversed(order):
            grad = pending.pop(id(node), None)
            if grad is None or not node.requires_grad:
                continue
            if node._backward is None:
                node._accumulate(grad)
                continue
            for parent, parent_grad in node._backward(grad):
                if not parent.requires_grad:
                    continue
                if id(parent) in pending:
                    pending[id(parent)] = [a + b for a, b in zip(pending[id(parent)], parent_grad)]
                else:
                    pending[id(parent)] = parent_grad

    def __repr__(self) -> str:
        preview = ", ".join(f"{v:.4f}" for v in self.data[:4])
        return f"tensor([{preview}{', ...' if len(self.data) > 4 else ''}], shape={self.shape})"
