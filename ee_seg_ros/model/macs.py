"""Multiply-add counts of the operations the network executes, from the shapes actually run.

Counting from shapes (not hooks) keeps the per-frame cost of accounting to a few integer
operations, and counts what really ran when tokens have left the sequence.
"""


def conv_macs(out_h: int, out_w: int, c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return out_h * out_w * c_in * c_out * k * k // groups


def linear_macs(n: int, d_in: int, d_out: int) -> int:
    return n * d_in * d_out


def block_macs(n: int, dim: int, mlp_ratio: float) -> int:
    """One pre-norm transformer block on ``n`` tokens: qkv, attention, projection, MLP."""
    hidden = int(dim * mlp_ratio)
    return (linear_macs(n, dim, 3 * dim) + 2 * n * n * dim + linear_macs(n, dim, dim)
            + linear_macs(n, dim, hidden) + linear_macs(n, hidden, dim))
