"""Optimizers as pure state-update functions over pytrees.

An optimizer is an immutable value with two pure functions::

    opt = fnn.optim.adam(learning_rate=1e-3)     # a float, or a schedule step -> value
    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = fnn.optim.apply_updates(params, updates)

The state is a pytree of arrays (jit, donate, checkpoint and shard it like
params); ``update`` never modifies its inputs. Everything runs on NumPy arrays
(with no JAX installed) and on JAX arrays, inside ``jax.jit`` too. The protocol
is the one optax uses, so fnn and optax transforms can be chained together;
fnn does not depend on optax.

* aliases: :func:`sgd` (momentum, Nesterov), :func:`adagrad`, :func:`rmsprop`,
  :func:`adam`, :func:`adamw` — each with its update formula in its docstring;
* building blocks to :func:`chain`: :func:`scale`, :func:`scale_by_learning_rate`,
  :func:`scale_by_schedule`, :func:`trace`, :func:`scale_by_adagrad`,
  :func:`scale_by_rms`, :func:`scale_by_adam`, :func:`add_decayed_weights` (L2),
  :func:`add_l1` (L1),
  :func:`clip`, :func:`clip_by_global_norm`;
* per-parameter control: :func:`masked`, :func:`freeze`, :func:`partition`,
  :func:`decay_mask`; robustness: :func:`skip_not_finite`; float16 training:
  :func:`dynamic_loss_scale`;
* the learning rate as state: :func:`get_learning_rate`, :func:`set_learning_rate`;
* optimizers and fnn's schedules are values: each prints as the call that
  built it, and two built by the same call compare and hash equal (a rebuilt
  optimizer is the same jit cache key), see :mod:`fnn.optim.calls`;
* schedules (module :mod:`fnn.optim.schedules`): :func:`constant_schedule`,
  :func:`linear_schedule`, :func:`exponential_decay`, :func:`piecewise_constant`,
  :func:`cosine_decay`, :func:`warmup_cosine_decay`, :func:`join_schedules`.
"""

from fnn.optim import schedules
from fnn.optim.aliases import adagrad, adam, adamw, rmsprop, sgd
from fnn.optim.base import EmptyState, GradientTransformation, Optimizer, Schedule, apply_updates, chain
from fnn.optim.clipping import ClipByGlobalNormState, clip, clip_by_global_norm, global_norm
from fnn.optim.l1 import add_l1
from fnn.optim.learning_rate import (
    LearningRateState,
    ScaleByScheduleState,
    get_learning_rate,
    scale_by_learning_rate,
    scale_by_schedule,
    set_learning_rate,
)
from fnn.optim.loss_scale import DynamicLossScaleState, LossScaler, dynamic_loss_scale
from fnn.optim.masking import MaskedState, PartitionState, freeze, masked, partition
from fnn.optim.schedules import (
    constant_schedule,
    cosine_decay,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant,
    warmup_cosine_decay,
)
from fnn.optim.transforms import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByRmsState,
    TraceState,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_rms,
    trace,
)
from fnn.optim.weight_decay import add_decayed_weights, decay_mask
from fnn.optim.wrappers import SkipNotFiniteState, all_finite, skip_not_finite

__all__ = [  # noqa: RUF022 (grouped by concept, not sorted)
    # protocol
    "GradientTransformation",
    "Optimizer",
    "EmptyState",
    "Schedule",
    "chain",
    "apply_updates",
    # aliases
    "sgd",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    # transforms
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
    "scale_by_adagrad",
    "scale_by_rms",
    "scale_by_adam",
    "add_decayed_weights",
    "add_l1",
    "decay_mask",
    "clip",
    "clip_by_global_norm",
    "global_norm",
    "masked",
    "freeze",
    "partition",
    "skip_not_finite",
    "all_finite",
    "dynamic_loss_scale",
    "LossScaler",
    # learning rate as state
    "get_learning_rate",
    "set_learning_rate",
    # states
    "LearningRateState",
    "ScaleByScheduleState",
    "TraceState",
    "ScaleByAdagradState",
    "ScaleByRmsState",
    "ScaleByAdamState",
    "ClipByGlobalNormState",
    "MaskedState",
    "PartitionState",
    "SkipNotFiniteState",
    "DynamicLossScaleState",
    # schedules
    "schedules",
    "constant_schedule",
    "linear_schedule",
    "exponential_decay",
    "piecewise_constant",
    "cosine_decay",
    "warmup_cosine_decay",
    "join_schedules",
]
