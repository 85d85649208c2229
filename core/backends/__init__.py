"""Attention backends. Each module exposes one function with one signature:

    forward(q, k, v, call: AttentionCall) -> (output, weights | None, lse | None)

with q (B, Hq, L, D), k (B, Hk, S, D), v (B, Hk, S, Dv) and ``call`` describing masks, scale,
dropout and what to return (see ``attnlab.core.attention``).
"""
