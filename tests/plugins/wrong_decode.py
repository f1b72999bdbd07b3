"""A deliberately wrong decode attention, registered as a user's plugin would be: it forgets
the 1/sqrt(d) scale, so its softmax is too sharp. The gate must fail it and nothing may time it."""

import torch.nn.functional as F

from roofbench.kernels.registry import register_impl


@register_impl("decode_attention", "wrong")
def unscaled(q, k_cache, v_cache, context_lens, out=None):
    """SDPA over the cache with scale 1 instead of 1/sqrt(head_dim)."""
    b, hq, d = q.shape
    hkv = k_cache.shape[1]
    o = F.scaled_dot_product_attention(q.view(b, hkv, hq // hkv, d), k_cache, v_cache, scale=1.0)
    o = o.reshape(b, hq, d)
    return o if out is None else out.copy_(o)
