"""fnn.parallel.initialize: two processes on 127.0.0.1 train as one.

Two subprocesses (this file run as a script) join one run through
``jax.distributed.initialize`` on a free local port, with gloo CPU
collectives, one CPU device each. Each feeds only its half of every global
batch (``shard_batch``, i.e. ``jax.make_array_from_process_local_data``),
and then runs ``fit(mesh=...)``. Both print their final parameters; the test
compares them with each other and with a single-process run. Both processes
are bounded by a timeout and killed on failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCH = 10, 32
TIMEOUT = 120


def setup():
    import fnn

    x, y = fnn.data.load_digits()
    model = fnn.models.mlp((16,), num_classes=10)
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    return x, y, model, fnn.losses.softmax_cross_entropy, opt


def fresh_state(model, opt):
    import jax

    import fnn

    host = fnn.train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    return jax.device_put(host._replace(key=None))._replace(key=fnn.key(0))


def flat(tree) -> list:
    import jax

    return [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(tree)]


def single() -> dict:
    """The reference: one process, one device, the same global batches."""
    import jax

    import fnn

    x, y, model, loss, opt = setup()
    step = jax.jit(fnn.train.train_step(model, loss, opt))
    ts = fresh_state(model, opt)
    for i in range(STEPS):
        ts, _ = step(ts, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    fitted, _ = fnn.train.fit(model, loss, opt, fresh_state(model, opt), (x[:200], y[:200]), epochs=2,
                              batch_size=BATCH, progress=False)
    return {"step": flat(ts.params), "fit": flat(fitted.params)}


def worker(checkpoints: str) -> dict:
    import fnn
    from fnn import parallel

    parallel.initialize()  # from FNN_COORDINATOR, FNN_NUM_PROCESSES, FNN_PROCESS_ID
    import jax

    me, n = jax.process_index(), jax.process_count()
    x, y, model, loss, opt = setup()
    mesh = parallel.data_mesh()
    step = jax.jit(fnn.train.train_step(model, loss, opt, mesh=mesh))
    ts = parallel.replicate(fresh_state(model, opt), mesh)
    local = BATCH // n
    for i in range(STEPS):
        lo = i * BATCH + me * local  # this process's share of global batch i
        xs, ys = parallel.shard_batch((x[lo : lo + local], y[lo : lo + local]), mesh)
        ts, _ = step(ts, xs, ys)
    params = jax.tree.map(lambda a: a.addressable_data(0), ts.params)
    fitted, history = fnn.train.fit(model, loss, opt, fresh_state(model, opt), (x[:200], y[:200]), epochs=2,
                                    batch_size=BATCH, mesh=mesh, progress=False,
                                    checkpoint_dir=Path(checkpoints) / f"process_{me}")
    fit_params = jax.tree.map(lambda a: a.addressable_data(0), fitted.params)
    # every process resumes from process 0's checkpoint (a shared directory) and
    # must end where an uninterrupted three-epoch run ends
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("checkpoint written")
    data, common = (x[:200], y[:200]), dict(batch_size=BATCH, mesh=mesh, progress=False)
    resumed, _ = fnn.train.fit(model, loss, opt, fresh_state(model, opt), data, epochs=3, resume=True,
                               checkpoint_dir=Path(checkpoints) / "process_0", **common)
    straight, _ = fnn.train.fit(model, loss, opt, fresh_state(model, opt), data, epochs=3, **common)
    return {
        "resumed": flat(jax.tree.map(lambda a: a.addressable_data(0), resumed.params)),
        "straight": flat(jax.tree.map(lambda a: a.addressable_data(0), straight.params)),
        "process": me,
        "processes": n,
        "devices": len(jax.devices()),
        "global_batch_shape": list(xs.shape),
        "local_batch_shape": list(xs.addressable_data(0).shape),
        "step": flat(params),
        "fit": flat(fit_params),
        "epochs": len(history),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    ckpt = tmp_path_factory.mktemp("ckpt")
    env = dict(base, FNN_COORDINATOR=f"127.0.0.1:{free_port()}", FNN_NUM_PROCESSES="2")
    # output to files, not pipes: a process blocked on a full pipe would stall the other at shutdown
    logs = tmp_path_factory.mktemp("logs")
    files = [(open(logs / f"out_{i}", "w+"), open(logs / f"err_{i}", "w+")) for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", str(ckpt)], cwd=REPO, env=dict(env, FNN_PROCESS_ID=str(i)),
                         stdout=out, stderr=err, text=True)
        for i, (out, err) in enumerate(files)
    ]
    outs = []
    try:
        for p, (out, err) in zip(procs, files):
            p.wait(timeout=TIMEOUT)
            out.seek(0), err.seek(0)
            assert p.returncode == 0, err.read()[-4000:]
            outs.append(json.loads(out.read().strip().splitlines()[-1]))
    finally:
        for handles in files:
            for f in handles:
                f.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    done = subprocess.run([sys.executable, __file__, "single"], cwd=REPO, env=base, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return outs, json.loads(done.stdout.strip().splitlines()[-1]), ckpt


def max_diff(a: list, b: list) -> float:
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def test_two_processes_form_one_mesh(runs):
    outs, _, _ = runs
    assert [o["process"] for o in outs] == [0, 1]
    assert all(o["processes"] == 2 and o["devices"] == 2 for o in outs)
    assert all(o["global_batch_shape"][0] == BATCH and o["local_batch_shape"][0] == BATCH // 2 for o in outs)


@pytest.mark.parametrize("what", ["step", "fit"])
def test_processes_agree_with_each_other_and_with_one_process(runs, what):
    outs, reference, _ = runs
    assert max_diff(outs[0][what], outs[1][what]) == 0.0  # replicated: the very same values
    assert max_diff(outs[0][what], reference[what]) < 1e-5


def test_only_process_zero_writes_checkpoints(runs):
    outs, _, ckpt = runs
    assert all(o["epochs"] == 2 for o in outs)
    written = {p.name: len(list(p.iterdir())) for p in Path(ckpt).iterdir()}
    assert written.get("process_0", 0) >= 1 and written.get("process_1", 0) == 0, written


def test_cli_has_the_multiprocess_options(capsys):
    from fnn import cli

    assert cli.main(["train", "--backend", "numpy", "--num-processes", "2", "--epochs", "1"]) == 2
    assert "--coordinator/--num-processes/--process-id need --backend jax" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--coordinator", "--num-processes", "--process-id"))


def test_a_coordinator_that_never_answers_is_a_clear_error_not_a_hang():
    import time

    import fnn.parallel

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"initialize: the coordinator {address} did not answer within 1 s"):
        fnn.parallel.initialize(address, num_processes=2, process_id=1, timeout=1.0)
    assert time.monotonic() - start < 10


def test_process_ids_beyond_the_expected_count_are_refused():
    import fnn.parallel

    with pytest.raises(ValueError, match=r"initialize: process_id must be in \[0, 2\); got 2"):
        fnn.parallel.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match=r"coordinator_address must be 'host:port'; got 'nowhere'"):
        fnn.parallel.initialize("nowhere", num_processes=2, process_id=1, timeout=1.0)


def test_every_process_resumes_from_the_same_checkpoint(runs):
    outs, _, _ = runs
    for out in outs:
        assert max_diff(out["resumed"], out["straight"]) == 0.0
    assert max_diff(outs[0]["resumed"], outs[1]["resumed"]) == 0.0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(worker(sys.argv[2]) if sys.argv[1] == "worker" else single()))
