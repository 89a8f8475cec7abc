"""The planted mutants of ``tests/mutation/run.py``: plausible one-line bugs
in the hand-written backward rules, losses, combinators, ``manual_vjp`` and
the optimizers, each with the test files of its module.

A mutant is one line of :data:`MUTANTS`: ``M(name, find, replace)`` inside
the block of its source file; ``find`` must occur exactly once in that file.
To cover a new rule, add a line to its file's block (or a new block)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    """Replace ``find`` (exactly one occurrence) by ``replace`` in ``file``, then run ``tests``."""

    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


def M(name: str, find: str, replace: str) -> tuple[str, str, str]:  # noqa: N802 - reads as a table row
    """One mutant of the enclosing :func:`block`."""
    return name, find, replace


def block(file: str, tests: tuple[str, ...], *rows: tuple[str, str, str]) -> list[Mutant]:
    """The mutants of one source file, all run against ``tests``."""
    return [Mutant(name, file, find, replace, tests) for name, find, replace in rows]


# The tests each module's mutants run (kept small: a mutant runs them all when it survives).
def props(*names: str) -> tuple[str, ...]:
    """The property sweep's test of each named layer."""
    return tuple(f"tests/test_properties.py::test_manual_backward_equals_jax_grad[{n}]" for n in names)


def proofs(*tests: str) -> tuple[str, ...]:
    """Tests of tests/test_gradient_proofs.py, by function name."""
    return tuple(f"tests/test_gradient_proofs.py::{t}" for t in tests)


ACTIVATIONS = props("sigmoid", "tanh", "relu", "gelu", "softplus", "silu", "gelu_exact", "elu", "leaky_relu", "prelu",
                    "rrelu", "softmax", "log_softmax", "step")
LAYERS = (*props("dense", "flatten", "reshape", "dropout"), *ACTIVATIONS,
          *proofs("test_rrelu_in_train_mode_uses_its_drawn_slopes_backward"), "tests/test_layers.py")
CONV = (*props("conv", "conv1d", "conv2d", "conv3d", "conv_transpose"),
        *proofs("test_cpu_convolution_forms_accumulate_16_bit_inputs_in_float32",
                "test_grouped_convolution_in_every_implementation_on_jax"), "tests/test_conv.py")
POOL = (*props("max_pool", "avg_pool", "global_avg_pool"),
        *proofs("test_max_pool_backward_values_by_hand", "test_pooling_backward_on_rectangular_windows",
                "test_max_pool_ties_go_to_the_first_maximum", "test_sum_pool_backward_forms_with_unequal_paddings"),
        "tests/test_pooling.py", "tests/test_pooling_nd.py")
NORM = (*props("batch_norm", "layer_norm", "rms_norm", "group_norm"),
        *(f"tests/test_sequence_layers.py::{t}" for t in ("test_rms_norm_formula", "test_rms_norm_gradients",
                                                          "test_group_norm_formula", "test_group_norm_gradients")),
        "tests/test_normalization.py")
RECURRENT = (*props("rnn", "lstm", "gru", "bidirectional"), "tests/test_recurrent.py")
SEQUENCE = (*props("embedding", "bidirectional"), *proofs("test_scatter_add_rows_adds_repeated_ids_in_every_form"),
            "tests/test_sequence_layers.py::test_embedding_gradient_is_a_scatter_add_manual_autodiff_numeric",
            "tests/test_sequence_layers.py::test_embedding_in_a_model_manual_equals_autodiff_under_jit_and_manual_vjp")
ATTENTION = (*props("multi_head_attention", "transformer_block"),
             *(f"tests/test_attention.py::{t}" for t in ("test_kernel_backward_matches_jax_grad_in_both_forms",
                                                          "test_mha_gradients", "test_transformer_block_gradients")))
LOSSES = ("tests/test_loss_gradients.py", "tests/test_losses.py")
COMBINATORS = (*props("serial", "parallel", "residual", "fan_out", "fan_in_sum", "fan_in_mul", "fan_in_concat"),
               *proofs("test_fan_in_concat_backward_on_every_axis"),
               "tests/test_combinators.py::test_combinator_backward",
               "tests/test_combinators.py::test_fan_combinators_shapes_and_gradients")
GRAD = (*(f"tests/test_grad.py::{t}" for t in ("test_manual_on_numpy_equals_autodiff_under_jit",
                                            "test_grads_keep_param_dtypes",
                                            "test_manual_vjp_gives_jax_grad_answer_and_uses_the_custom_rule",
                                            "test_a_wrong_rule_changes_jax_grad_under_jit_and_vmap")),
        *proofs("test_manual_vjp_in_train_mode_with_batch_norm_and_dropout",
                                      "test_manual_vjp_returns_each_gradient_in_its_params_dtype",
                                      "test_value_and_grad_returns_each_gradient_in_its_params_dtype",
                                      "test_value_and_grad_runs_the_model_in_train_mode"))
OPTIM = (*proofs("test_first_two_updates_follow_the_formula", "test_scale_by_rms_initial_scale_changes_the_first_step",
                 "test_decay_mask_decays_kernels_only_for_every_built_in_parameter",
                 "test_adamw_leaves_1d_params_alone_with_the_decay_mask", "test_global_norm_of_16_bit_gradients"),
         "tests/test_optim_transforms.py", "tests/test_optim_aliases.py", "tests/test_optim_numpy.py")

# fmt: off
MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- dense, activations
    *block("fnn/layers/dense.py", LAYERS,
        M("dense dw doubled", 'grads = {"w": weight_gradient(rows, drows)}', 'grads = {"w": 2 * weight_gradient(rows, drows)}'),
        M("dense db mean not sum", 'grads["b"] = drows.sum(axis=0)', 'grads["b"] = drows.mean(axis=0)'),
        M("dense dx uses dy unflattened rows", 'return grads, dy @ params["w"].T if input_grad else None',
          'return grads, dy @ params["w"].T * 0.5 if input_grad else None'),
    ),
    *block("fnn/functional.py", LAYERS,
        M("d_sigmoid y(1+y)", "return y * (1.0 - y)", "return y * (1.0 + y)"),
        M("d_tanh 1 - y", "return 1.0 - y * y", "return 1.0 - y"),
        M("d_elu at x > 0 wrong side", "return namespace(x).where(x > 0, 1.0, y + alpha)",
          "return namespace(x).where(x >= 0, 1.0, y + alpha)"),
        M("d_elu forgets alpha", "return namespace(x).where(x > 0, 1.0, y + alpha)",
          "return namespace(x).where(x > 0, 1.0, y + 1.0)"),
        M("d_gelu drops the 3a x^2 term", "* _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)", "* _GELU_C * (1.0 + _GELU_A * x * x)"),
        M("d_silu sign", "return s * (1.0 + x * (1.0 - s))", "return s * (1.0 - x * (1.0 - s))"),
        M("d_gelu_exact drops x phi(x)", "+ x * xp.exp(-0.5 * x * x) * _INV_SQRT_2PI", "+ xp.exp(-0.5 * x * x) * _INV_SQRT_2PI"),
    ),
    *block("fnn/kernels/relu.py", LAYERS,
        M("relu' at 0 is 1", "return backend.namespace(x, values).where(x <= 0, 0.0, values)",
          "return backend.namespace(x, values).where(x < 0, 0.0, values)"),
    ),
    *block("fnn/layers/activations.py", LAYERS,
        M("leaky_relu' at 0 is 1", "where(x > 0, dy, k * dy)", "where(x >= 0, dy, k * dy)"),
        M("leaky_relu slope ignored", "where(x > 0, dy, k * dy)", "where(x > 0, dy, 0.01 * dy)"),
        M("softmax bwd forgets y", "return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))",
          "return y * (dy - xp.sum(dy, axis=-1, keepdims=True))"),
        M("softmax bwd sums the wrong axis", "return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))",
          "return y * (dy - xp.sum(dy * y, axis=0, keepdims=True))"),
        M("log_softmax bwd forgets exp", "return dy - xp.exp(y) * xp.sum(dy, axis=-1, keepdims=True)",
          "return dy - y * xp.sum(dy, axis=-1, keepdims=True)"),
        M("prelu dalpha from the positive side", "xp.where(positive, 0.0, x) * dy", "xp.where(positive, x, 0.0) * dy"),
        M("prelu dx slope 1", 'dx = xp.where(positive, dy, params["alpha"] * dy)', "dx = xp.where(positive, dy, dy)"),
        M("rrelu bwd with the mean slope in train mode", "return {}, backend.namespace(x, dy).where(x > 0, dy, slope * dy)",
          "return {}, backend.namespace(x, dy).where(x > 0, dy, ((lower + upper) / 2.0) * dy)"),
        M("softplus' is tanh", 'softplus = _activation("softplus", F.softplus, F.sigmoid, "x")',
          'softplus = _activation("softplus", F.softplus, lambda x: 0.5 + 0.5 * F.tanh(x), "x")'),
    ),
    *block("fnn/layers/dropout.py", ("tests/test_dropout.py", *LAYERS),
        M("dropout bwd without 1/keep", "return {}, xp.where(mask, dy / keep_prob, 0.0)", "return {}, xp.where(mask, dy, 0.0)"),
        M("dropout bwd ignores the mask", "return {}, xp.where(mask, dy / keep_prob, 0.0)", "return {}, xp.where(True, dy / keep_prob, 0.0)"),
    ),
    *block("fnn/layers/reshape.py", LAYERS,
        M("reshape bwd in column-major order", "def bwd(params, shape, dy):\n        return {}, dy.reshape(shape)",
          "def bwd(params, shape, dy):\n        return {}, dy.reshape(shape, order=\"F\") if type(dy).__module__ == \"numpy\" else dy.T.reshape(shape[::-1]).T"),
    ),
    # ---------------------------------------------------------------- convolution
    *block("fnn/kernels/conv.py", CONV,
        M("16-bit matrix forms accumulate in 16 bits", "return np.dtype(np.float32) if is_float and dtype.itemsize < 4 else dtype",
          "return dtype"),
        M("bfloat16 matrix forms accumulate in 16 bits", 'is_float = dtype.kind == "f" or dtype.name == "bfloat16"',
          'is_float = dtype.kind == "f"'),
        M("numpy dx kernel not transposed per group", "dyg = dy.reshape(-1, groups, f // groups).transpose(1, 2, 0)  # (G, F/G, M)",
          "dyg = dy.reshape(-1, f // groups, groups).transpose(2, 1, 0)  # (G, F/G, M)"),
        M("numpy dw groups interleaved", "dyg = dy.reshape(-1, groups, f // groups).transpose(1, 0, 2)  # (G, M, F/G)\n        return",
          "dyg = dy.reshape(-1, f // groups, groups).transpose(2, 0, 1)  # (G, M, F/G)\n        return"),
        M("xla dx kernel not flipped", "flipped = w[(slice(None, None, -1),) * rank]", "flipped = w"),
        M("xla dx padding lo/hi swapped", "padding=[(sp - lo, sp - hi + r) for sp, (lo, hi), r in zip(spans, padding, rest)]",
          "padding=[(sp - hi, sp - lo + r) for sp, (lo, hi), r in zip(spans, padding, rest)]"),
        M("xla dx forgets the unreached rest", "padding=[(sp - lo, sp - hi + r) for sp, (lo, hi), r in zip(spans, padding, rest)]",
          "padding=[(sp - lo, sp - hi) for sp, (lo, hi), r in zip(spans, padding, rest)]"),
        M("xla dw strides and dilation swapped", "strides=dilation,\n            rhs_dilation=strides,",
          "strides=strides,\n            rhs_dilation=dilation,"),
        M("xla dw ignores the unreached rest", "padding=[(lo, hi - r) for (lo, hi), r in zip(padding, rest)]",
          "padding=[(lo, hi) for (lo, hi), r in zip(padding, rest)]"),
        M("matmul dx groups mixed", "dcols = dcols.reshape(groups, -1, k_size, c // groups).transpose(1, 2, 0, 3)  # (M, K, G, C/G)",
          "dcols = dcols.reshape(groups, -1, k_size, c // groups).transpose(1, 2, 3, 0)  # (M, K, G, C/G)"),
        M("blocked dw window offset", "dw = sum(m[q, :, :, q : q + kw] for q in range(block))",
          "dw = sum(m[q, :, :, 0:kw] for q in range(block))"),
        M("unreached rest off by one", "n + lo + hi - ((o - 1) * s + (k - 1) * d + 1)", "n + lo + hi - ((o - 1) * s + (k - 1) * d)"),
    ),
    *block("fnn/kernels/windows.py", CONV + POOL,
        M("col2im assigns instead of adding", "        planes[(slice(None), slice(None), *_offset_index(o, strides, out_sizes, dilation))] += cols[o]",
          "        planes[(slice(None), slice(None), *_offset_index(o, strides, out_sizes, dilation))] = cols[o]"),
        M("patches_to_image assigns instead of adding",
          "image[(slice(None), *_offset_index(o, strides, out_sizes, dilation))] += cols[(Ellipsis, *o, slice(None))]",
          "image[(slice(None), *_offset_index(o, strides, out_sizes, dilation))] = cols[(Ellipsis, *o, slice(None))]"),
        M("crop from the high side", "*(slice(lo, lo + n) for (lo, _), n in zip(padding, in_sizes))",
          "*(slice(hi, hi + n) for (_, hi), n in zip(padding, in_sizes))"),
    ),
    # ---------------------------------------------------------------- pooling
    *block("fnn/kernels/pool.py", POOL,
        M("numpy max-pool window axes swapped", "t = windows.reshape(*windows.shape[:-1], *window)  # (N, *out, C, *k)",
          "t = windows.reshape(*windows.shape[:-1], *window[::-1])  # (N, *out, C, *k)"),
        M("max-pool sends dy to the last maximum", "first = xp.min(xp.where(hit, order, area), axis=ks, keepdims=True)",
          "first = xp.max(xp.where(hit, order, -1), axis=ks, keepdims=True)"),
        M("patches max-pool dy to every maximum", "dcols = xp.where(order == at, dy[..., None, :], 0).astype(dy.dtype)",
          "dcols = xp.where(cols == xp.max(cols, axis=rank + 1, keepdims=True), dy[..., None, :], 0).astype(dy.dtype)"),
        M("xla sum-pool dx padding lo/hi swapped", "pads = [(k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(window, padding, rest)]",
          "pads = [(k - 1 - hi, k - 1 - lo + r) for k, (lo, hi), r in zip(window, padding, rest)]"),
        M("tiles sum-pool dx spread over output axes", "expanded = dy.reshape(n, *[d for o in out for d in (o, 1)], c)",
          "expanded = dy.reshape(n, *[d for o in out for d in (o, 1)][::-1], c)"),
    ),
    *block("fnn/layers/pooling.py", POOL,
        M("avg-pool bwd forgets the count", "share = dy / counts(x.shape, dy.dtype)", "share = dy"),
        M("avg-pool counts padded cells", "if count_include_pad or all(p == (0, 0) for p in pads):", "if True:"),
        M("global_avg_pool bwd over batch", "area = int(np.prod(x.shape[1:-1]))", "area = int(np.prod(x.shape[:-1]))"),
    ),
    # ---------------------------------------------------------------- normalisation
    *block("fnn/layers/normalization.py", NORM,
        M("batch-stats bwd drops the mean term", "return (dx_hat - m1 - x_hat * m2) * inv", "return (dx_hat - x_hat * m2) * inv"),
        M("batch-stats bwd drops the variance term", "return (dx_hat - m1 - x_hat * m2) * inv", "return (dx_hat - m1) * inv"),
        M("rms_norm bwd keeps the mean term", "    if not centred:\n        return (dx_hat - x_hat * m2) * inv",
          "    if not centred:\n        return (dx_hat - xp.mean(dx_hat, axis=axes, keepdims=True) - x_hat * m2) * inv"),
        M("batch_norm eval bwd as train", 'dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, axes) if mode == "batch" else dx_hat * inv',
          "dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, axes)"),
        M("dscale without x_hat", 'grads = {"scale": xp.sum(dyc * x_hat, axis=axes)', 'grads = {"scale": xp.sum(dyc, axis=axes)'),
        M("running average weights swapped", "k: (momentum * state[k] + (1.0 - momentum) * v.reshape(c))",
          "k: ((1.0 - momentum) * state[k] + momentum * v.reshape(c))"),
        M("group_norm statistics over one axis", "x_hat, inv, _, _ = _normalize(xp, grouped(x.astype(ct)), (1, 3), eps)",
          "x_hat, inv, _, _ = _normalize(xp, grouped(x.astype(ct)), (3,), eps)"),
        M("layer_norm bwd scale missing", "dx_hat = dyc * _as_row(params[\"scale\"], dy.ndim, x_hat.dtype)\n        dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, (dy.ndim - 1,))\n",
          "dx_hat = dyc\n        dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, (dy.ndim - 1,))\n"),
    ),
    # ---------------------------------------------------------------- recurrent
    *block("fnn/layers/_cells.py", RECURRENT,
        M("rnn dh_prev without w_h", 'return da, da, (da @ params["w_h"].T,)', "return da, da, (da,)"),
        M("lstm dc forgets the forget gate", "return da, da, (da @ params[\"w_h\"].T, dc * f)", "return da, da, (da @ params[\"w_h\"].T, dc)"),
        M("lstm dc without the tanh path", "dc = dc + dh * o * F.d_tanh(tanh_c)", "dc = dc + dh * o"),
        M("gru du sign", "du = dh * (h_prev - n) * F.d_sigmoid(u)", "du = dh * (n - h_prev) * F.d_sigmoid(u)"),
        M("gru dh_prev forgets u", "return dz, da, (dh * u + da @ params[\"w_h\"].T,)", "return dz, da, (dh + da @ params[\"w_h\"].T,)"),
        M("gru b_hn gradient from the wrong block", 'return {"b_hn": xp.sum(da[:, 2 * hidden :], axis=0)}',
          'return {"b_hn": xp.sum(da[:, hidden : 2 * hidden], axis=0)}'),
    ),
    *block("fnn/layers/recurrent.py", RECURRENT,
        M("bptt: w_h gradient against the new states", 'weight_gradient(prevs[0].reshape(n, hidden), da)', 'weight_gradient(res["states"][0].reshape(n, hidden), da)'),
        M("bptt: padded steps keep their cotangent", "dnew = tuple(xp.where(keep_t, d, 0.0) for d in dnew)", "dnew = dnew"),
        M("bptt: padded steps drop the carried cotangent", "dprev = tuple(xp.where(keep_t, dp, d) for dp, d in zip(dprev, dcarry))",
          "dprev = tuple(xp.where(keep_t, dp, 0.0) for dp, d in zip(dprev, dcarry))"),
        M("bptt: db from da", '"b": xp.sum(dz, axis=0),', '"b": xp.sum(da, axis=0),'),
    ),
    *block("fnn/layers/bidirectional.py", RECURRENT,
        M("bidirectional dx backward run not re-reversed", "dx = dx_f + _reverse(xp, dx_b, order)", "dx = dx_f + dx_b"),
        M("bidirectional halves swapped", 'halves = {"forward": d[..., :half], "backward": d[..., half:]}',
          'halves = {"forward": d[..., half:], "backward": d[..., :half]}'),
    ),
    # ---------------------------------------------------------------- sequence layers and attention
    *block("fnn/layers/embedding.py", SEQUENCE,
        M("embedding dw rows misaligned", "scatter_add_rows(ids.reshape(-1), rows, num_embeddings)",
          "scatter_add_rows(ids.reshape(-1)[::-1], rows, num_embeddings)"),
    ),
    *block("fnn/kernels/scatter.py", SEQUENCE,
        M("numpy scatter assigns instead of adding", "np.add.at(out, ids, values)", "out[ids] = values"),
    ),
    *block("fnn/kernels/attention.py", ATTENTION,
        M("attention ds forgets the scale", "    ds = p * (dp - delta) * scale\n    return ds @ k",
          "    ds = p * (dp - delta)\n    return ds @ k"),
        M("attention delta from dp", "    delta = xp.sum(do * o, axis=-1, keepdims=True)\n    ds = p * (dp - delta) * scale\n    return",
          "    delta = xp.sum(dp * p, axis=-1, keepdims=True) * 0.0\n    ds = p * (dp - delta) * scale\n    return"),
        M("attention dk uses k", "return ds @ k, xp.swapaxes(ds, -1, -2) @ q, dv", "return ds @ k, xp.swapaxes(ds, -1, -2) @ k, dv"),
        M("blocked attention ds forgets delta", "        ds = p * (dp - delta) * scale", "        ds = p * dp * scale"),
    ),
    # ---------------------------------------------------------------- combinators, core, grad
    *block("fnn/combinators.py", COMBINATORS,
        M("fan_in_concat splits the last axis", "return {}, tuple(xp.split(dy, cuts, axis=ax))", "return {}, tuple(xp.split(dy, cuts, axis=-1))"),
        M("fan_in_concat cuts at the sizes", "cuts = np.cumsum(sizes)[:-1].tolist()", "cuts = sizes[:-1]"),
        M("fan_out bwd keeps the first cotangent", "        for d in dy[1:]:\n            total = total + d", "        for d in dy[1:]:\n            total = total"),
        M("residual forgets the identity path", "        if shortcut is None and input_grad:\n            dx = dx + dy",
          "        if shortcut is None and input_grad:\n            dx = dx"),
        M("residual projection cotangent dropped", "dx = _add(dx, dxi) if input_grad else None", "dx = dxi if input_grad else None"),
        M("serial bwd skips the first layer's input grad", "input_grad=input_grad or i > 0)", "input_grad=i > 0)"),
        M("fan_in_mul bwd forgets the inputs after", "            if a is not None:\n                d = d * a",
          "            if False:\n                d = d * a"),
        M("fan_in_mul bwd prefix skips one input", "before[i] = xs[i - 1] if before[i - 1] is None else before[i - 1] * xs[i - 1]",
          "before[i] = xs[i - 1]"),
        M("parallel bwd swaps cotangents", "for n, layer, dyi in zip(names, layers, _multi_input(name, dy, len(layers))):",
          "for n, layer, dyi in zip(names, layers, _multi_input(name, dy, len(layers))[::-1]):"),
    ),
    *block("fnn/grad.py", GRAD,
        M("manual_vjp forward ignores train", "        y, new_state, _ = model.fwd(params, state, x, key=key, train=train)\n        return y, new_state",
          "        y, new_state, _ = model.fwd(params, state, x, key=key, train=False)\n        return y, new_state"),
        M("manual_vjp residuals from eval mode", "y, new_state, residuals = model.fwd(params, state, x, key=key, train=train)\n        return (y, new_state), (params, residuals)",
          "y, new_state, residuals = model.fwd(params, state, x, key=key, train=False)\n        return (y, new_state), (params, residuals)"),
        M("manual_vjp grads in the computation dtype", "return _like_params(dparams, params), None, dx, None", "return dparams, None, dx, None"),
        M("value_and_grad grads in the computation dtype", "return value, new_state, pred, _like_params(grads, params)",
          "return value, new_state, pred, grads"),
        M("value_and_grad runs eval mode", "pred, new_state, residuals = model.fwd(params, state, x, key=key, train=True)",
          "pred, new_state, residuals = model.fwd(params, state, x, key=key, train=False)"),
        M("value_and_grad loss cotangent 2", "loss.bwd(loss_residuals, 1.0)", "loss.bwd(loss_residuals, 2.0)"),
    ),
    *block("fnn/core.py", GRAD,
        M("Layer.apply ignores a custom apply", "        if self._apply is not None:\n            return self._apply(params, state, x, key, train)",
          "        if False:\n            return self._apply(params, state, x, key, train)"),
    ),
    # ---------------------------------------------------------------- losses
    *block("fnn/losses.py", LOSSES,
        M("softmax CE divides by the batch axis only", "return dvalue * (xp.exp(log_p) * mass - t) / _batch_count(log_p)",
          "return dvalue * (xp.exp(log_p) * mass - t) / log_p.shape[0]"),
        M("softmax CE soft targets as if rows sum to 1", "return dvalue * (xp.exp(log_p) * mass - t) / _batch_count(log_p)",
          "return dvalue * (xp.exp(log_p) - t) / _batch_count(log_p)"),
        M("softmax CE drops dvalue", "return dvalue * (xp.exp(log_p) * mass - t) / _batch_count(log_p)",
          "return (xp.exp(log_p) * mass - t) / _batch_count(log_p)"),
        M("mse bwd without the 2", "return (2.0 / r.size) * dvalue * r", "return (1.0 / r.size) * dvalue * r"),
        M("mse bwd over the batch only", "return (2.0 / r.size) * dvalue * r", "return (2.0 / r.shape[0]) * dvalue * r"),
        M("huber bwd unclipped", "return dvalue * xp.clip(r, -delta, delta) / r.size", "return dvalue * r / r.size"),
        M("sigmoid BCE bwd over the batch only", "return dvalue * (F.sigmoid(logits) - t) / logits.size",
          "return dvalue * (F.sigmoid(logits) - t) / logits.shape[0]"),
        M("cross_entropy bwd forgets delta", "return -dvalue * t / (probs + delta) / _batch_count(probs)",
          "return -dvalue * t / probs / _batch_count(probs)"),
        M("binary CE bwd sign of the second term", "return -dvalue * (t / (probs + delta) - (1.0 - t) / (1.0 - probs + delta)) / probs.size",
          "return -dvalue * (t / (probs + delta) + (1.0 - t) / (1.0 - probs + delta)) / probs.size"),
    ),
    # ---------------------------------------------------------------- optimizers
    *block("fnn/optim/transforms.py", OPTIM,
        M("trace: nesterov uses the old velocity", "updates = tree_map_arrays(xp, lambda g, v: (g + decay * v).astype(g.dtype, copy=False), grads, velocity)",
          "updates = tree_map_arrays(xp, lambda g, v: (g + decay * v).astype(g.dtype, copy=False), grads, state.trace)"),
        M("trace: velocity without decay", "lambda g, v: (decay * v + g).astype(v.dtype, copy=False)", "lambda g, v: (v + g).astype(v.dtype, copy=False)"),
        M("adagrad ignores its initial accumulator", "return ScaleByAdagradState(_full_like(params, initial_accumulator_value))",
          "return ScaleByAdagradState(_full_like(params, 0.0))"),
        M("adagrad eps inside the root", "lambda g, h: (g / (xp.sqrt(h) + eps))", "lambda g, h: (g / xp.sqrt(h + eps))"),
        M("rms ignores its initial scale", "return ScaleByRmsState(_full_like(params, initial_scale))", "return ScaleByRmsState(_full_like(params, 0.0))"),
        M("rms without (1 - decay)", "(decay * v + (1 - decay) * g * g)", "(decay * v + g * g)"),
        M("adam bias correction one step late", "count = safe_increment(state.count)", "count = safe_increment(state.count) + 1"),
    ),
    *block("fnn/kernels/optim.py", OPTIM,
        M("adam xla: no bias correction of m", "m_hat = m * inv_correction1.astype(m.dtype, copy=False)", "m_hat = m"),
        M("adam xla: v bias correction with b1", "inv_correction2 = 1 / (1 - b2**t)", "inv_correction2 = 1 / (1 - b1**t)"),
        M("adam xla: eps inside the root", "u = (m_hat / (xp.sqrt(v_hat) + eps))", "u = (m_hat / xp.sqrt(v_hat + eps))"),
        M("adam numpy: multiplier without root2", "return scale * root2 / correction1, eps * root2", "return scale / correction1, eps * root2"),
        M("adam numpy: eps not rescaled", "return scale * root2 / correction1, eps * root2", "return scale * root2 / correction1, eps"),
    ),
    *block("fnn/optim/learning_rate.py", OPTIM + ("tests/test_optim_schedules.py",),
        M("learning rate ascends", "updates = scale_updates(grads, sign * current)", "updates = scale_updates(grads, current)"),
        M("schedule read at the old count", "value = xp.asarray(schedule(count), dtype=current.dtype)",
          "value = xp.asarray(schedule(state[0]), dtype=current.dtype)"),
    ),
    *block("fnn/optim/weight_decay.py", OPTIM + ("tests/test_optim_l1.py",),
        M("decay mask decays 1-D leaves", "return name not in NO_DECAY_NAMES and np.ndim(leaf) > 1", "return name not in NO_DECAY_NAMES"),
        M("decay mask decays biases", "return name not in NO_DECAY_NAMES and np.ndim(leaf) > 1", "return np.ndim(leaf) > 0"),
        M("penalty gradient subtracts", "xp.asarray(g + coefficient * direction(xp, xp.asarray(p)).astype(g.dtype))",
          "xp.asarray(g - coefficient * direction(xp, xp.asarray(p)).astype(g.dtype))"),
        M("weight decay adds the sign", "penalty_gradient(where, weight_decay, lambda xp, p: p, mask, record)",
          "penalty_gradient(where, weight_decay, lambda xp, p: xp.sign(p), mask, record)"),
        M("weight decay ignores the mask", "selected = [True] * len(backend.tree_leaves(params)) if mask is None else resolve_mask(where, mask, params)",
          "selected = [True] * len(backend.tree_leaves(params))"),
    ),
    *block("fnn/optim/l1.py", OPTIM + ("tests/test_optim_l1.py",),
        M("add_l1 pushes away from 0", "lambda xp, p: xp.sign(p)", "lambda xp, p: -xp.sign(p)"),
        M("add_l1 adds the param, not its sign", "lambda xp, p: xp.sign(p)", "lambda xp, p: p"),
    ),
    *block("fnn/kernels/weight_grad.py", ("tests/test_kernels_weight_grad.py",),
        M("transposed weight gradient off by one part in a million", "return backend.lax.optimization_barrier(x.T) @ dy",
          "return backend.lax.optimization_barrier(x.T) @ (dy * (1.0 + 1e-6))"),
        M("auto never plans", "form = \"xla\" if is_numpy else plan.weight_gradient_form(rows, inputs, np.shape(dy)[1], backend.default_platform())",
          "form = \"xla\""),
    ),
    *block("fnn/kernels/plan.py", ("tests/test_kernels_weight_grad.py",),
        M("narrow weight gradient on every platform", 'return "transposed" if platform == "cpu" and narrow else "xla"',
          'return "transposed" if narrow else "xla"'),
    ),
    *block("fnn/allocator.py", ("tests/test_allocator.py",),
        M("freed blocks still unmapped", '("mmap_max", -4, 0)', '("mmap_max", -4, 65536)'),
        M("freed heap trimmed at once", 'retain_bytes if name == "trim_threshold" else value',
          '0 if name == "trim_threshold" else value'),
    ),
    *block("fnn/optim/clipping.py", OPTIM,
        M("global_norm squares 16-bit floats in 16 bits", "wide = leaf.astype(np.promote_types(leaf.dtype, np.float32))", "wide = leaf"),
        M("global_norm without the root", "return xp.asarray(xp.sqrt(total), dtype=total.dtype)", "return xp.asarray(total, dtype=total.dtype)"),
        M("clip_by_global_norm scales up small gradients", "factor = max_norm / xp.maximum(norm, max_norm)", "factor = max_norm / norm"),
        M("clip by value one-sided", "xp.clip(g, -max_delta, max_delta)", "xp.minimum(g, max_delta)"),
    ),
]
# fmt: on
