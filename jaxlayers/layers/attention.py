"""Placeholder for ``dot_product_attention`` (replaced by the attention op at merge)."""

import jax

__all__: list[str] = []


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False):
    """``jax.nn.dot_product_attention`` with the same arguments (a placeholder for jaxlayers' op)."""
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal)
