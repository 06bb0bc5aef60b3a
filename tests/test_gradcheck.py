"""The gradcheck tool itself: its error measures, its finite differences, its report and CLI."""

from __future__ import annotations

import io
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.gradcheck import check_vjp, main, norm_rel_error, numerical_gradient, rel_error


def test_rel_error_is_the_seed_definition():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert rel_error(np.array([0.0]), np.array([1e-10])) == pytest.approx(1e-2)  # 1e-8 floor
    assert rel_error(np.array([np.nan]), np.array([1.0])) == np.inf
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))


def test_norm_rel_error():
    assert norm_rel_error(np.array([10.0, 1e-12]), np.array([10.0, 2e-12])) == pytest.approx(1e-13)
    assert norm_rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_numerical_gradient_of_a_known_function(x64):
    x = jnp.array([[0.3, -1.2], [2.0, 0.7]])
    g = numerical_gradient(lambda a: jnp.sin(a) * a, x)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-11)
    ct = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    g = numerical_gradient(lambda a: a**3, x, ct)
    np.testing.assert_allclose(g, 3 * np.asarray(x) ** 2 * ct, rtol=1e-10, atol=1e-10)


def test_check_vjp_passes_for_every_op_and_catches_a_wrong_rule():
    x = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
    rows = check_vjp(jl.affine, x, jnp.ones((3, 4)), jnp.zeros(4))
    assert [r.argument for r in rows] == [0, 1, 2]
    assert all(r.ok() and r.custom_vs_autodiff <= 1e-12 for r in rows)
    rows = check_vjp(jl.batchnorm, x, jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True)
    assert all(r.ok() for r in rows)

    @jax.custom_vjp
    def wrong_relu(x):
        return jnp.maximum(x, 0)

    wrong_relu.defvjp(lambda x: (wrong_relu(x), x), lambda x, g: (g,))  # forgets the mask
    rows = check_vjp(wrong_relu, x, reference=jl.layers.relu_reference)
    assert not rows[0].ok()
    assert rows[0].custom_vs_autodiff > 0.1 and rows[0].custom_vs_numeric > 0.1


def test_check_vjp_needs_a_reference_for_unknown_ops():
    with pytest.raises(KeyError, match=r"not in jaxlayers\.opinfo\.OPS"):
        check_vjp(jnp.sin, jnp.ones(3))


def test_check_vjp_leaves_x64_off():
    check_vjp(jl.relu, jnp.ones((2, 2)))
    assert not jax.config.jax_enable_x64


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({info.name.split("[")[0] for info in jl.opinfo.OPS}))
def test_report_table_passes(name):
    # One op per test, so that xdist spreads the registry over the workers; together they are every op.
    out = io.StringIO()
    assert main(out=out, ops=[name]) == 0
    text = out.getvalue()
    assert name in text
    assert "FAIL" not in text
    assert " 0 failed" in text


def test_report_covers_every_registered_op():
    names = {info.name for info in jl.gradcheck.select_ops(None)}
    assert names == {info.name for info in jl.opinfo.OPS}
    assert {"conv2d", "max_pool2d", "spatial_batchnorm[train]", "layernorm", "groupnorm", "affine"} <= names


def test_console_script_exits_zero():
    # The whole registry is test_report_table_passes' job; the command's wiring needs one op or two.
    code = "import sys; from jaxlayers.cli import main; sys.exit(main(['gradcheck', '--op', 'softmax_loss', 'relu']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "softmax_loss" in proc.stdout and "relu" in proc.stdout and "affine" not in proc.stdout
    assert "passed, 0 failed" in proc.stdout


def test_gradcheck_op_selection(capsys):
    from jaxlayers import cli

    assert [info.name for info in jl.gradcheck.select_ops(["batchnorm"])] == ["batchnorm[train]", "batchnorm[test]"]
    assert cli.main(["gradcheck", "--op", "conv3d"]) == 2
    assert "gradcheck: no op named conv3d; the ops are" in capsys.readouterr().err
