"""The optimizer every contender of the suite trains with, chosen in one place:
Adam (the default) or SGD + momentum (``python -m benchmarks --optimizer momentum``).

A choice hands each contender its own form of the same update:

* ``fnn()``: ``fnn.optim.adam`` / ``fnn.optim.sgd(lr, momentum=0.9)`` (fnn's
  manual, autodiff and fit steps, the W3 loops and bare scan);
* ``optax()``: ``optax.adam`` / ``optax.sgd(lr, momentum=0.9)`` (Flax, Equinox, Haiku);
* ``torch(parameters)``: ``torch.optim.Adam`` / ``torch.optim.SGD(lr, momentum=0.9)``;
* ``numpy()``: the NumPy reference's in-place ``Adam`` / ``Momentum``;
* ``jax_init(params)`` and ``jax_update``: the plain-JAX references' inline
  update (``benchmarks.references``).

SGD + momentum is the same formula in all of them (no Nesterov, no dampening,
the learning rate outside the velocity, the velocity starting at 0)::

    v = 0.9 v + g          # so the first step's v is g
    p = p - lr v

optax's ``trace`` starts its trace at zeros; PyTorch starts its momentum
buffer at the first gradient, which is the same first step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import fnn.optim
from benchmarks.workloads import LEARNING_RATE, MOMENTUM, MOMENTUM_LEARNING_RATE


class Optimizer(ABC):
    """One optimizer in every contender's form (see the module docstring)."""

    name: ClassVar[str]  # the value of --optimizer
    short_label: ClassVar[str]  # in titles
    torch_class: ClassVar[str]  # the torch.optim class of torch()
    learning_rate: float

    @property
    @abstractmethod
    def label(self) -> str:
        """What the header, ``results.md`` and the chart's title print."""

    @abstractmethod
    def fnn(self) -> fnn.optim.GradientTransformation:
        """fnn's optimizer."""

    @abstractmethod
    def optax(self) -> Any:
        """optax's (the JAX library contenders')."""

    @abstractmethod
    def torch(self, parameters: list[Any]) -> Any:
        """PyTorch's, over ``parameters``."""

    @abstractmethod
    def numpy(self) -> Any:
        """The NumPy reference's, updating its parameter dict in place."""

    @abstractmethod
    def jax_init(self, params: Any) -> Any:
        """The plain-JAX references' optimizer state for ``params``."""

    @abstractmethod
    def jax_update(self, params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        """The plain-JAX references' update: ``(new params, new state)``."""

    def file_name(self, stem: str, suffix: str) -> str:
        """An output file's name: Adam's as it always was (``results.json``), another
        optimizer's tagged (``results-momentum.json``), so that its run keeps Adam's files."""
        return f"{stem}{suffix}" if self.name == DEFAULT else f"{stem}-{self.name}{suffix}"


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam, learning rate 1e-3, b1 0.9, b2 0.999, eps 1e-8, bias-corrected moments."""

    learning_rate: float = LEARNING_RATE
    name: ClassVar[str] = "adam"
    short_label: ClassVar[str] = "Adam"
    torch_class: ClassVar[str] = "Adam"

    @property
    def label(self) -> str:
        return f"Adam (learning rate {self.learning_rate:g})"

    def fnn(self) -> fnn.optim.GradientTransformation:
        return fnn.optim.adam(self.learning_rate)

    def optax(self) -> Any:
        import optax

        return optax.adam(self.learning_rate)

    def torch(self, parameters: list[Any]) -> Any:
        import torch

        return torch.optim.Adam(parameters, lr=self.learning_rate, betas=(0.9, 0.999), eps=1e-8)

    def numpy(self) -> Any:
        from benchmarks import numpy_reference

        return numpy_reference.Adam(self.learning_rate)

    def jax_init(self, params: Any) -> Any:
        from benchmarks import references

        return references.adam_init(params)

    def jax_update(self, params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        from benchmarks import references

        return references.adam_update(params, grads, state, self.learning_rate)


@dataclass(frozen=True)
class Momentum(Optimizer):
    """SGD + momentum 0.9, learning rate 1e-2, no Nesterov: ``v = 0.9 v + g``, ``p -= lr v``."""

    learning_rate: float = MOMENTUM_LEARNING_RATE
    momentum: float = MOMENTUM
    name: ClassVar[str] = "momentum"
    short_label: ClassVar[str] = "SGD + momentum"
    torch_class: ClassVar[str] = "SGD"

    @property
    def label(self) -> str:
        return f"SGD + momentum {self.momentum:g} (learning rate {self.learning_rate:g}, no Nesterov)"

    def fnn(self) -> fnn.optim.GradientTransformation:
        return fnn.optim.sgd(self.learning_rate, momentum=self.momentum)

    def optax(self) -> Any:
        import optax

        return optax.sgd(self.learning_rate, momentum=self.momentum)

    def torch(self, parameters: list[Any]) -> Any:
        import torch

        return torch.optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum)

    def numpy(self) -> Any:
        from benchmarks import numpy_reference

        return numpy_reference.Momentum(self.learning_rate, self.momentum)

    def jax_init(self, params: Any) -> Any:
        from benchmarks import references

        return references.momentum_init(params)

    def jax_update(self, params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        from benchmarks import references

        return references.momentum_update(params, grads, state, self.learning_rate, self.momentum)


DEFAULT = Adam.name
ADAM = Adam()  # the suite's default, the functions' default argument
OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {Adam.name: Adam, Momentum.name: Momentum}


def choose(name: str) -> Optimizer:
    """The optimizer called ``name`` (a key of :data:`OPTIMIZERS`) at the suite's settings."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return OPTIMIZERS[name]()
