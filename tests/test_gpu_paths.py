"""What fnn computes on a GPU, checked on the CPU: with JAX's platform reported as
"gpu", every kernel takes its GPU form ("auto" then means XLA's convolution in
all three pieces, the plain attention at any length; pooling, the optimizer and
the elementwise kernels have no platform rule), and the models' losses and
manual gradients equal the CPU forms' (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import backend
from fnn import layers as L
from fnn.kernels import attention as attention_kernel
from fnn.kernels import plan


def record(monkeypatch, name: str) -> list:
    """Records what the plan's rule ``name`` answers (one entry per call)."""
    seen = []
    real = getattr(plan, name)

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(plan, name, recording)
    return seen


@pytest.fixture
def forms(monkeypatch):
    """Records the convolution forms "auto" resolves to (one tuple per call of the plan)."""
    return record(monkeypatch, "lowering_plan")


def losses_and_grads(model, loss, x, y):
    params, state = model.init(np.random.default_rng(0), x.shape, dtype=np.float64)
    params, state = jax.tree.map(jnp.asarray, (params, state))
    grad_fn = jax.jit(fnn.value_and_grad(model, loss, method="manual"))  # a fresh trace: the plan is asked again
    (value, _), grads = grad_fn(params, state, jnp.asarray(x), jnp.asarray(y))
    return float(value), jax.tree.map(np.asarray, grads)


def small_convnet() -> fnn.Layer:
    """A 3x3 convolution on one channel (a tap sum on a CPU), 2x2 max pooling, a 3x3
    convolution over 2x2 images (more taps than pixels: im2col forward and col2im
    input gradient on a CPU), a dense head whose last layer has 128 inputs and 10
    outputs (its weight gradient made from x.T first on a CPU)."""
    return L.serial(
        L.conv2d(4, 3, padding="same"), L.relu, L.max_pool(2), L.conv2d(4, 3, padding="same"), L.relu,
        L.flatten, L.dense(128), L.relu, L.dense(10),
    )


def test_a_convnet_on_the_gpu_forms_equals_the_cpu_forms(monkeypatch, forms):
    model, shape = small_convnet(), (2, 4, 4, 1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(shape), rng.integers(0, 10, shape[0])
    weight_grads = record(monkeypatch, "weight_gradient_form")
    cpu_loss, cpu_grads = losses_and_grads(model, fnn.losses.softmax_cross_entropy, x, y)
    assert any(f != ("xla", "xla", "xla") for f in forms)  # the CPU plan took other forms somewhere
    assert "transposed" in weight_grads
    forms.clear()
    weight_grads.clear()
    monkeypatch.setattr(backend, "default_platform", lambda: "gpu")
    gpu_loss, gpu_grads = losses_and_grads(model, fnn.losses.softmax_cross_entropy, x, y)
    assert forms and all(f == ("xla", "xla", "xla") for f in forms), forms
    assert weight_grads and set(weight_grads) == {"xla"}, weight_grads
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-12)
    jax.tree.map(lambda g, c: np.testing.assert_allclose(g, c, rtol=1e-9, atol=1e-12), gpu_grads, cpu_grads)


def test_attention_on_the_gpu_form_equals_the_cpu_blocked_form(monkeypatch):
    tk = attention_kernel.BLOCKED_FROM  # from here on a CPU runs the blocked form
    block = L.multi_head_attention(1, key_size=4)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((1, tk, 4)), rng.standard_normal((1, tk, 4))
    assert attention_kernel.resolve("auto", tk, platform="cpu")[0] == "blocked"
    cpu_loss, cpu_grads = losses_and_grads(block, fnn.losses.mse, x, y)
    monkeypatch.setattr(backend, "default_platform", lambda: "gpu")
    assert attention_kernel.resolve("auto", tk, platform=backend.default_platform())[0] == "xla"
    gpu_loss, gpu_grads = losses_and_grads(block, fnn.losses.mse, x, y)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-12)
    jax.tree.map(lambda g, c: np.testing.assert_allclose(g, c, rtol=1e-9, atol=1e-12), gpu_grads, cpu_grads)


def test_the_suite_on_a_gpu_stops_with_one_line_when_none_is_visible(capsys):
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is visible: the suite would run")
    from benchmarks.__main__ import main

    assert main(["--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device gpu: no GPU visible to JAX" in err and "jax[cuda12]" in err
