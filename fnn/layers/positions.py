"""Position encodings for sequence models: ``sinusoidal_positions`` adds the
fixed sin / cos table of "Attention is all you need" to its input.

Forward ``y[n, t, :] = x[n, t, :] + table[t, :]`` with
:func:`fnn.functional.sinusoidal_table`; backward ``dx = dy`` (the table is a
constant, so there are no params).
"""

from __future__ import annotations

import numpy as np

from fnn import backend
from fnn import functional as F
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_no_params, expect_single, is_multi_shape, layer_factory, no_params

__all__ = ["sinusoidal_positions"]


@layer_factory
def sinusoidal_positions(*, max_wavelength: float = 10000.0, name: str = "sinusoidal_positions") -> Layer:
    """Adds the sinusoidal position encoding to ``(batch, time, features)`` inputs::

        y[n, t, 2i]     = x[n, t, 2i]     + sin(t / max_wavelength ** (2i / features))
        y[n, t, 2i + 1] = x[n, t, 2i + 1] + cos(t / max_wavelength ** (2i / features))

    ``features`` must be even. No params, no state; backward ``dx = dy``. The
    table is built in float64 with NumPy (a constant under ``jit``) and added
    in the input's dtype.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.sinusoidal_positions()
    >>> y, _ = layer.apply({}, {}, np.zeros((1, 2, 2)))
    >>> np.round(y, 4)  # position 0: sin 0, cos 0; position 1: sin 1, cos 1
    array([[[0.    , 1.    ],
            [0.8415, 0.5403]]])
    """
    number = isinstance(max_wavelength, (int, float, np.floating)) and not isinstance(max_wavelength, bool)
    if not (number and np.isfinite(max_wavelength) and max_wavelength > 0):
        raise ValueError(f"{name}: max_wavelength must be a positive finite number; got {max_wavelength!r}")

    def out_shape(shape):
        if is_multi_shape(shape) or len(shape) != 3:
            hint = "" if is_multi_shape(shape) else batch_axis_hint(shape, 3)
            raise LayerError(name, f"expected input of shape (batch, time, features), got {shape}{hint}")
        if shape[2] is not None and shape[2] % 2:
            raise LayerError(name, f"features must be even (sin and cos pairs); got {shape[2]} in shape {shape}")
        return tuple(shape)

    def fwd(params, state, x, key, train):
        check_no_params(name, params)
        _, time, features = out_shape(tuple(np.shape(expect_single(name, x))))
        xp = backend.namespace(x)
        table = xp.asarray(F.sinusoidal_table(time, features, max_wavelength)).astype(x.dtype)
        return x + table.reshape(1, time, features), state, None

    def bwd(params, residuals, dy):
        return {}, dy

    return Layer(name, no_params, out_shape, fwd, bwd)
