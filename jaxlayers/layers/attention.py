"""Placeholder for ``dot_product_attention`` (replaced by the attention op at merge)."""

import jax
import jax.numpy as jnp

__all__: list[str] = []


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False):
    """``jax.nn.dot_product_attention`` with the same arguments (a placeholder for jaxlayers' op).

    float64 inputs are computed here in float64 (``jax.nn.dot_product_attention`` takes its softmax in
    float32), so that the float64 checks of what is built on it hold to 1e-9 before the op is merged.
    """
    if jnp.result_type(query, key, value) != jnp.float64:
        return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal)
    t, s = query.shape[1], key.shape[1]
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", query, key) * scale
    if bias is not None:
        logits = logits + bias
    allowed = jnp.ones(logits.shape, bool)
    if mask is not None:
        allowed = allowed & mask
    if is_causal:
        allowed = allowed & jnp.tril(jnp.ones((t, s), bool))
    probs = jax.nn.softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)
    probs = jnp.where(allowed, probs, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", probs, value)
