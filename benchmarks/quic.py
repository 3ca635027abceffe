"""Suite ``quic`` (issue 15): only the ``tls`` suite's QUIC group, VMess over QUIC,
vtwist<->vtwist beside V2Ray<->V2Ray (``python -m benchmarks quic``)."""

from __future__ import annotations

from benchmarks.core import MB, Context, Group
from benchmarks.tls import quic_group


def groups(ctx: Context) -> list[Group]:
    """The QUIC comparison."""
    return [quic_group(ctx, (4 if ctx.quick else 128) * MB)]
