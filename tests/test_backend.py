"""The backend: namespace from the arrays, keys as values, pytree helpers on
both paths, scatter-add and scan."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import backend


def test_namespace_follows_the_arrays_tracers_included():
    assert backend.namespace(np.ones(2)) is np
    assert backend.namespace({"a": np.ones(2), "b": jnp.ones(2)}) is jnp
    assert backend.namespace([], 3.0) is np
    seen = []
    jax.jit(lambda x: seen.append(backend.namespace(x)) or x)(np.ones(2))
    assert seen == [jnp]
    assert backend.is_concrete(np.ones(1)) and backend.is_concrete(jnp.ones(1))
    jax.jit(lambda x: seen.append(backend.is_concrete(x)) or x)(jnp.ones(1))
    assert seen[-1] is False


def test_keys_are_values_on_both_backends():
    gen = np.random.default_rng(0)
    before = gen.bit_generator.state
    a = backend.normal(gen, (3,))
    b = backend.normal(gen, (3,))
    np.testing.assert_array_equal(a, b)  # same key, same numbers: the generator is not advanced
    assert gen.bit_generator.state == before
    k1, k2 = backend.split(gen)
    assert not np.allclose(backend.normal(k1, (3,)), backend.normal(k2, (3,)))
    np.testing.assert_array_equal(backend.normal(backend.fold_in(gen, 5), (2,)), backend.normal(backend.fold_in(gen, 5), (2,)))
    assert not np.allclose(backend.normal(backend.fold_in(gen, 5), (2,)), backend.normal(backend.fold_in(gen, 6), (2,)))
    gen.standard_normal()  # a generator that moved on gives new numbers
    assert not np.allclose(backend.normal(gen, (3,)), a)
    jk = fnn.key(0)
    assert isinstance(backend.normal(jk, (2,)), jax.Array)
    assert backend.split(jk, 3).shape == (3,)
    assert backend.bernoulli(jk, 0.5, (1000,)).mean() == pytest.approx(0.5, abs=0.06)
    assert backend.bernoulli(gen, 0.25, (4000,)).mean() == pytest.approx(0.25, abs=0.03)


def test_name_hash_is_stable():
    assert backend.name_hash("dense_1") != backend.name_hash("dense_2")
    assert backend.name_hash("relu") == int.from_bytes(__import__("hashlib").sha256(b"relu").digest()[:4], "little")


def test_key_argument_errors():
    with pytest.raises(ValueError, match="backend must be 'jax' or 'numpy'; got 'torch'"):
        fnn.key(0, backend="torch")
    with pytest.raises(TypeError, match="must be a JAX PRNG key .* or a numpy.random.Generator"):
        backend.normal(0, (2,))
    with pytest.raises(TypeError, match=r"dense.init: key must be a JAX PRNG key"):
        fnn.layers.dense(2).init(42, (None, 3))


Pair = collections.namedtuple("Pair", ["first", "second"])
TREE = {"b": [np.ones(2), (np.zeros(1), None)], "a": Pair(np.arange(3.0), {"z": np.full(2, 7.0)}), "e": {}}


def test_python_tree_helpers_match_jax():
    expected_leaves = jax.tree.leaves(TREE)
    paths = ["a/first", "a/second/z", "b/0", "b/1/0"]
    assert [p for p, _ in backend.tree_leaves_with_path(TREE)] == paths
    py_pairs = backend._py_flatten(TREE)
    assert ["/".join(p) for p, _ in py_pairs] == paths
    for (_, mine), theirs in zip(py_pairs, expected_leaves):
        np.testing.assert_array_equal(mine, theirs)
    structure = backend._Structure(backend._py_template(TREE), len(py_pairs))
    rebuilt = backend._py_fill(structure.template, iter([leaf * 2 for _, leaf in py_pairs]))
    assert isinstance(rebuilt["a"], Pair) and rebuilt["b"][1][1] is None and rebuilt["e"] == {}
    np.testing.assert_array_equal(rebuilt["a"].second["z"], np.full(2, 14.0))
    assert structure == backend._Structure(backend._py_template(rebuilt), 4)
    assert structure != backend._Structure(backend._py_template({"a": 1}), 1)
    assert backend.tree_size(TREE) == 2 + 1 + 3 + 2


def test_tree_cast_and_to_numpy():
    tree = {"w": jnp.ones(2, jnp.float32), "n": np.array([1, 2])}
    cast = backend.tree_cast(tree, np.float64)
    assert cast["w"].dtype == np.float64 and cast["n"].dtype == np.array([1]).dtype
    host = backend.to_numpy(tree)
    assert type(host["w"]) is np.ndarray


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_agrees_between_backends(reverse):
    def f(carry, x):
        return carry * 0.5 + x["u"], {"c": carry, "d": x["u"] * 2}

    xs = {"u": np.arange(5.0)}
    c_np, ys_np = backend.scan(f, np.float64(1.0), xs, reverse=reverse)
    c_jx, ys_jx = backend.scan(f, jnp.float64(1.0), {"u": jnp.arange(5.0)}, reverse=reverse)
    assert float(c_np) == pytest.approx(float(c_jx))
    for k in ("c", "d"):
        np.testing.assert_allclose(ys_np[k], np.asarray(ys_jx[k]))
