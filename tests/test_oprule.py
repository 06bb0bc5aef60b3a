"""custom_op (one statement registers an op's rule) and the one int-pair parser / real-number check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlayers._checks import check_number, int_pair
from jaxlayers._oprule import custom_op


def _scale_reference(x, key, *, factor, shift=0.0):
    return x * factor + shift


def _scale_fwd(x, key, *, factor, shift=0.0):
    return x * factor + shift, jnp.asarray(factor, x.dtype)


def _scale_bwd(residuals, g, *, factor):
    del residuals
    return (g * factor,)  # a static argument the bwd names is passed to it by name


def test_statics_by_name_and_a_nondiff_argument_gets_no_cotangent():
    scale = custom_op(_scale_reference, _scale_fwd, _scale_bwd, static=("factor", "shift"), nondiff=("key",))
    x, key = jnp.arange(3.0), jax.random.key(0)
    np.testing.assert_array_equal(scale(x, key, factor=2.0, shift=1.0), x * 2 + 1)
    np.testing.assert_array_equal(scale(x, key, factor=3.0), x * 3)  # default shift
    dx = jax.grad(lambda x: scale(x, key, factor=3.0).sum())(x)
    np.testing.assert_array_equal(dx, jnp.full(3, 3.0))


def test_registration_names_unknown_or_misplaced_arguments():
    with pytest.raises(TypeError, match=r"custom_op\(_scale\): \['stride'\] are not parameters"):
        custom_op(_scale_reference, _scale_fwd, _scale_bwd, static=("stride",))
    with pytest.raises(TypeError, match=r"static arguments .* must come after the traced ones"):
        custom_op(_scale_reference, _scale_fwd, _scale_bwd, static=("x", "factor", "shift"))


def test_a_bwd_returning_the_wrong_number_of_cotangents_is_named():
    def bwd(residuals, g):
        return (g, g)  # one too many: key has no cotangent

    scale = custom_op(_scale_reference, _scale_fwd, bwd, static=("factor", "shift"), nondiff=("key",))
    with pytest.raises(TypeError, match=r"_scale_bwd returned 2 cotangents; expected 1, one for each of \('x',\)"):
        jax.grad(lambda x: scale(x, jax.random.key(0), factor=2.0).sum())(jnp.ones(2))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, (3, 3)),
        (np.int64(2), (2, 2)),
        ((1, 5), (1, 5)),
        ([2, 3], (2, 3)),
        ("4", (4, 4)),
        ("1,5", (1, 5)),
        ("1x5", (1, 5)),
    ],
)
def test_int_pair_accepts_an_int_a_pair_or_text(value, expected):
    assert int_pair(value, "op", "size") == expected


@pytest.mark.parametrize(
    ("value", "minimum", "exc", "match"),
    [
        (0, 1, ValueError, r"^op: size must be >= 1, got 0$"),
        ((1, -1), 0, ValueError, r"^op: size must be >= 0 in each entry, got \(1, -1\)$"),
        (1.5, 1, TypeError, r"^op: size must be a Python int or a pair of ints, got 1.5 of type float$"),
        (True, 1, TypeError, r"must be a Python int or a pair of ints, got True"),
        ((1, 2, 3), 1, TypeError, r"got \(1, 2, 3\)$"),
        ("1,2,3", 1, TypeError, r"got '1,2,3' \(text: K, KH,KW or KHxKW\)$"),
    ],
)
def test_int_pair_errors_name_the_argument_and_the_value(value, minimum, exc, match):
    with pytest.raises(exc, match=match):
        int_pair(value, "op", "size", minimum=minimum)


def test_check_number_is_the_one_real_number_check():
    assert check_number(np.float32(0.5), "op", "rate") == 0.5
    with pytest.raises(TypeError, match=r"^op: rate must be a Python number, got True of type bool$"):
        check_number(True, "op", "rate")
    with pytest.raises(TypeError, match=r"a jax.Array cannot be static under jit"):
        check_number(jnp.float32(0.5), "op", "rate")
    with pytest.raises(ValueError, match=r"^op: rate must be a finite number in \[0, 1\], got 2$"):
        check_number(2, "op", "rate", low=0, high=1)
