"""nn layers for sequences (issue 18): nn.Embedding, nn.TemporalAffine and ``loss="temporal_softmax"``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlayers as jl
from jaxlayers import nn
from jaxlayers.model import model_from_record, model_record

V, T, D = 7, 6, 8


def _bigram_model(**kw):
    return nn.Sequential(nn.Embedding(V, D), nn.TemporalAffine(V), input_shape=(T,), loss="temporal_softmax", **kw)


def _bigram_data(n, seed=0):
    """Next-word prediction where the next word is (word + 1) % V: learnable without recurrence."""
    x = np.random.RandomState(seed).randint(0, V, size=(n, T))
    return x, (x + 1) % V


def test_declaration_names_shapes_and_summary():
    model = _bigram_model()
    assert model.param_shapes() == {"E1": (V, D), "W2": (D, V), "b2": (V,)}
    assert model.weight_names() == ["W2"]  # the embedding table is outside the L2 penalty
    assert model.num_classes == V and model.sequence_targets
    rows = model.summary().splitlines()
    assert "Embedding(7, 8)" in rows[1] and "E1 (7, 8)" in rows[1] and f"(N, {T}, {D})" in rows[1]
    assert "TemporalAffine(7)" in rows[2] and "W2 (8, 7), b2 (7,)" in rows[2] and f"(N, {T}, {V})" in rows[2]
    assert rows[-1].startswith(f"Sequential: {V * D + D * V + V} parameters")
    by_number = model.summary(by="number").splitlines()
    assert by_number[1].split()[0] == "1" and by_number[2].split()[0] == "2"


def test_apply_keeps_indices_integer_and_matches_the_ops():
    model = _bigram_model()
    params, state = model.init(jax.random.key(0))
    x, _ = _bigram_data(4)
    scores, _ = model.apply(params, state, x, train=False)  # NumPy int64 indices
    assert scores.shape == (4, T, V) and scores.dtype == jnp.float32
    want = jl.temporal_affine(jl.word_embedding(jnp.asarray(x), params["E1"]), params["W2"], params["b2"])
    np.testing.assert_allclose(np.asarray(scores), np.asarray(want), rtol=1e-6)
    with pytest.raises(TypeError, match=r"x must hold integer indices for the first layer \(Embedding\(7, 8\)\)"):
        model.apply(params, state, x.astype(np.float32), train=False)
    assert model.predict(params, state, x).shape == (4, T)
    assert model.predict_proba(params, state, x).shape == (4, T, V)


def test_embedding_init_scale():
    (params, _, out) = nn.Embedding(1000, 64).init(jax.random.key(1), (5,))
    assert out == (5, 64)
    np.testing.assert_allclose(float(jnp.std(params["E"])), 1 / 8, rtol=0.05)
    (params, _, _) = nn.Embedding(1000, 64, scale=0.01).init(jax.random.key(1), (5,))
    np.testing.assert_allclose(float(jnp.std(params["E"])), 0.01, rtol=0.05)


def test_loss_masks_negative_labels_and_is_summed_over_time():
    model = _bigram_model()
    params, state = model.init(jax.random.key(0))
    x, y = _bigram_data(3)
    y = y.copy()
    y[0, 2:] = -1  # padding
    loss, (_, scores) = model.loss(params, state, x, y)
    mask = y >= 0
    want = jl.temporal_softmax_loss(scores, jnp.asarray(y), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    assert int(model.target_count(y)) == mask.sum() == 3 * T - (T - 2)
    # a padded step sends no gradient: changing its scores' inputs changes nothing
    g = jax.grad(lambda p: model.loss(p, state, x, y)[0])(params)
    g2 = jax.grad(lambda p: model.loss(p, state, x, np.where(mask, y, -5))[0])(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6), g, g2)


def test_loss_under_jit_out_of_range_label_is_nan():
    model = _bigram_model()
    params, state = model.init(jax.random.key(0))
    x, y = _bigram_data(2)
    y = y.copy()
    y[1, 1] = V
    assert np.isnan(float(jax.jit(lambda p: model.loss(p, state, x, y)[0])(params)))


def test_trains_a_few_steps_with_the_train_step():
    """make_train_step (the loop's step) on (N, T) labels: the loss falls well below T log V."""
    model = _bigram_model()
    x, y = _bigram_data(64)
    optimizer = optax.adam(0.1)
    state = jl.train.init_train_state(model, optimizer, jax.random.key(0))
    step = jl.train.make_train_step(model, optimizer)
    first = None
    for _ in range(60):
        state, metrics = step(state, x, y)
        first = float(metrics["loss"]) if first is None else first
    assert first > 0.9 * T * math.log(V)
    assert float(metrics["loss"]) < 0.1 * first
    pred = model.predict(state.params, state.model_state, x)
    np.testing.assert_array_equal(pred, y)


def test_round_trip_through_records():
    model = _bigram_model(reg=1e-3)
    record = model_record(model)
    again = model_from_record(record)
    assert isinstance(again, nn.Sequential)
    assert again.to_dict() == model.to_dict()
    assert again.loss_type == "temporal_softmax"
    assert record["config"]["layers"][0] == {"class": "Embedding", "config": {"vocab": V, "dim": D, "scale": None}}
    assert record["config"]["layers"][1] == {"class": "TemporalAffine", "config": {"features": V, "weight_scale": None}}
    for layer in (nn.Embedding(5, 3, scale=0.5), nn.TemporalAffine(4, weight_scale=0.1)):
        back = nn.layer_from_record(nn.layer_record(layer))
        assert type(back) is type(layer) and back.to_dict() == layer.to_dict()
    p1, _ = model.init(jax.random.key(3))
    p2, _ = again.init(jax.random.key(3))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p1, p2)


def test_replace_weight_scale_reaches_temporal_affine_only():
    model = _bigram_model().replace(weight_scale=0.5)
    assert model.layers[1].weight_scale == 0.5
    assert model.layers[0].scale is None


def test_declaration_errors():
    with pytest.raises(ValueError, match=r"loss='temporal_softmax': the last layer .* must output per-step scores"):
        nn.Sequential(nn.Embedding(V, D), nn.Flatten(), nn.Affine(V), input_shape=(T,), loss="temporal_softmax")
    with pytest.raises(ValueError, match=r"must output class scores \(C,\).*got output shape \(6, 7\)"):
        nn.Sequential(nn.Embedding(V, D), nn.TemporalAffine(V), input_shape=(T,))
    with pytest.raises(ValueError, match=r"nn.Embedding: needs inputs of shape \(T,\) of word indices"):
        nn.Sequential(nn.Embedding(V, D), nn.TemporalAffine(V), input_shape=(T, 2), loss="temporal_softmax")
    with pytest.raises(ValueError, match=r"nn.TemporalAffine: needs inputs of shape \(T, D\)"):
        nn.Sequential(nn.TemporalAffine(V), input_shape=(T,), loss="temporal_softmax")
    with pytest.raises(ValueError, match=r"nn.Embedding: vocab must be an int >= 1"):
        nn.Embedding(0, 3)
    with pytest.raises(ValueError, match=r"nn.Embedding: scale must be a finite number > 0"):
        nn.Embedding(3, 3, scale=-1.0)
