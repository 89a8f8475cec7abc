"""The PyTorch eager contender (``benchmarks/torch_reference.py``) computes what
fnn computes: from fnn's initial parameters it reaches fnn's first loss, and
three SGD steps move its parameters (converted back to fnn's layout) as fnn's
manual gradients do, and W5's running statistics are fnn's. Skipped when
PyTorch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fnn
from benchmarks import torch_reference
from benchmarks.suite import fnn_step, numpy_init
from benchmarks.workloads import workloads

KEYS = ["W1", "W2", "W3", "W4", "W5"]


def fnn_first_step(workload):
    """fnn's manual step on NumPy arrays: ``(new params, new state, first loss)``."""
    params, state = numpy_init(workload)
    x, y = workload.data()
    step, opt = fnn_step(workload, "manual")
    new_params, new_state, _, loss = step(params, state, opt.init(params), x, y)
    return new_params, new_state, float(loss)


def leaves(tree):
    """``{"a/b/c": array}``: every array of a nested dict by its path."""
    return dict(fnn.backend.tree_leaves_with_path(tree))


def sgd_moves(params, after):
    """``after - params`` leaf by leaf, in float64."""
    return {path: np.asarray(value, np.float64) - before for path, value, before in
            ((p, v, leaves(params)[p]) for p, v in leaves(after).items())}


@pytest.mark.parametrize("key", KEYS)
def test_first_loss_and_three_sgd_steps_match_fnn(key):
    """From fnn's initial params, PyTorch's first loss is fnn's, and three SGD steps
    move every parameter as fnn's do (SGD's moves are the gradients times the
    learning rate; Adam's first move is about ``-lr * sign(g)`` and would hide a
    wrong gradient's size)."""
    workload = workloads(quick=True)[key]
    params, state = numpy_init(workload)
    before = leaves(params)
    x, y = workload.data()
    lr, steps = 0.1, 3
    grad_fn = fnn.value_and_grad(workload.model, workload.loss, method="manual")
    opt = fnn.optim.sgd(lr)
    now, fnn_state, opt_state, losses = params, state, opt.init(params), []
    for _ in range(steps):
        (loss, fnn_state), grads = grad_fn(now, fnn_state, x, y)
        updates, opt_state = opt.update(grads, opt_state, now)
        now, losses = fnn.optim.apply_updates(now, updates), losses + [float(loss)]
    step = torch_reference.TorchStep(workload, params, state, x, y)
    step.optimizer = torch.optim.SGD(step.optimizer.param_groups[0]["params"], lr=lr)
    torch_losses = [float(step().item()) for _ in range(steps)]
    np.testing.assert_allclose(torch_losses, losses, rtol=1e-5)
    got, want = sgd_moves(params, step.export()[0]), sgd_moves(params, now)
    assert set(got) == set(want)
    scale = max(float(np.max(np.abs(v))) for v in want.values())
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=2e-4, atol=1e-5 * scale, err_msg=path)
    for path, value in leaves(params).items():  # the caller's arrays were copied, never updated
        np.testing.assert_array_equal(value, before[path])


def test_the_torch_step_helper_takes_a_finite_adam_step():
    workload = workloads(quick=True)["W1"]
    params, state = numpy_init(workload)
    x, y = workload.data()
    step, first_loss = torch_reference.train_step(workload, params, state, x, y)
    assert np.isclose(first_loss, fnn_first_step(workload)[2], rtol=1e-5)
    assert np.isfinite(float(step()))  # later steps keep going


def test_resnet_running_statistics_match_fnn():
    """PyTorch updates ``running_var`` with the unbiased batch variance, fnn with
    the biased one: the expected values are fnn's with that factor applied."""
    workload = workloads(quick=True)["W5"]
    params, state = numpy_init(workload)
    x, y = workload.data()
    new_params, new_state, loss = fnn_first_step(workload)
    step = torch_reference.TorchStep(workload, params, state, x, y)
    counts = {}  # running_var tensor id -> entries per channel of that batch norm's input
    for module in step.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_pre_hook(
                lambda m, args: counts.__setitem__(id(m.running_var), args[0].numel() // args[0].shape[1])
            )
    assert np.isclose(float(step()), loss, rtol=1e-5)
    _, got = step.export()
    old, want = leaves(state), leaves(new_state)
    n = {"/".join(b.path): counts[id(b.tensor)] for b in step.bindings if b.state and b.path[-1] == "var"}
    assert set(leaves(got)) == set(want) and len(n) == len(want) // 2
    for path, value in leaves(got).items():
        expected = want[path]
        if path.endswith("var"):  # 0.9 * old + 0.1 * biased  ->  0.9 * old + 0.1 * unbiased
            biased = (expected - 0.9 * old[path]) / 0.1
            expected = 0.9 * old[path] + 0.1 * biased * n[path] / (n[path] - 1)
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6, err_msg=path)
    np.testing.assert_allclose(step.export()[0]["dense"]["w"], new_params["dense"]["w"], rtol=1e-4, atol=1e-6)


def test_same_padding_puts_the_odd_pixel_after():
    assert torch_reference.same_padding(8, 3, 2) == (0, 1)  # where Conv2d(padding=1) would pad (1, 1)
    assert torch_reference.same_padding(7, 3, 2) == (1, 1)
    assert torch_reference.same_padding(8, 1, 2) == (0, 0)
    assert torch_reference.same_padding(28, 5, 1) == (2, 2)


@pytest.mark.parametrize(
    "layout, shape, hwc",
    [("dense", (6, 4), None), ("conv", (3, 2, 5, 7), None), ("dense_nhwc", (2 * 3 * 4, 5), (2, 3, 4))],
)
def test_layouts_round_trip(layout, shape, hwc):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    binding = torch_reference.Binding(("w",), torch.empty(0), layout, hwc=hwc)
    np.testing.assert_array_equal(binding.to_fnn(binding.to_torch(a)), a)


def test_nhwc_flatten_rows_follow_the_nchw_flatten():
    """A dense weight on an NHWC flatten, converted, gives the same product on the NCHW flatten."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)  # N, H, W, C
    w = rng.standard_normal((3 * 4 * 5, 6)).astype(np.float32)
    binding = torch_reference.Binding(("w",), torch.empty(0), "dense_nhwc", hwc=(3, 4, 5))
    nchw_flat = image.transpose(0, 3, 1, 2).reshape(2, -1)
    np.testing.assert_allclose(nchw_flat @ binding.to_torch(w).T, image.reshape(2, -1) @ w, rtol=1e-5)


def test_threads_note_names_the_version():
    assert torch.__version__ in torch_reference.threads_note()


@pytest.mark.parametrize("key", ["W2", "W5"])
def test_channels_last_gives_the_same_first_loss(key, monkeypatch):
    workload = workloads(quick=True)[key]
    params, state = numpy_init(workload)
    x, y = workload.data()
    monkeypatch.setattr(torch_reference, "CHANNELS_LAST", True)
    step, first_loss = torch_reference.train_step(workload, params, state, x, y)
    assert step.x.is_contiguous(memory_format=torch.channels_last)
    assert np.isclose(first_loss, fnn_first_step(workload)[2], rtol=1e-5)
