"""Suite ``quic`` (issue 15): only the ``tls`` suite's QUIC group, VMess over QUIC,
vtwist<->vtwist beside V2Ray<->V2Ray (``python -m benchmarks quic``).

Where the time goes (py-spy ``--gil`` of both vtwist processes, one 48 MB stream, 5 Dec
2026): aioquic's own Python is 78-87 % of each process's busy samples, sender
(``_write_application``, the packet builder, header protection and AEAD per 1452-byte
datagram) and receiver (``receive_datagram``, ``_handle_stream_frame``, decryption) alike;
the adapter (vtwist/transport/quic/) 7-8 %, Twisted's UDP reading 2-6 %, VMess 1-4 %. Each
process spends about 15 s of CPU per GB inside aioquic alone, twice what a whole V2Ray
process spends (5-8 s/GB), so the throughput goal cannot be met while aioquic builds and
parses every packet in Python. Without ``--gil``, a receiver's samples show up to 40 % in
the TCP ``send`` to the local reader: that is wall time spent preempted by the woken
reader on a busy 2-core machine, not CPU (its system time is 1-2 s/GB).
"""

from __future__ import annotations

from benchmarks.core import MB, Context, Group
from benchmarks.tls import quic_group


def groups(ctx: Context) -> list[Group]:
    """The QUIC comparison."""
    return [quic_group(ctx, (4 if ctx.quick else 128) * MB)]
