"""The gun transport against another gRPC implementation: grpcio (gRPC's C core).

V2Ray 4.34 has no gRPC, and Xray's and v2fly's gun transports are grpc-go services with the
methods ``/<serviceName>/Tun`` (``Hunk`` messages) and ``/TunMulti`` (``MultiHunk``). Here
grpcio plays that service, and that client, with the messages serialized by vtwist's framing
module: vtwist's client streams through grpcio's server and back, grpcio's client streams
through vtwist's server and back, with h2c and with TLS, gun and multi mode, and Xray's custom
paths.
"""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from twisted.internet import protocol, reactor, threads
from twisted.internet.endpoints import clientFromString, serverFromString

from tests.h2_support import clean_h2
from tests.interop.transport_support import HashingClient, TransportTestCase
from vtwist.testing.doubles import Echo
from vtwist.transport.grpc import framing

SIZE = 4 * 1024 * 1024


def _multi_serialize(chunks: list[bytes]) -> bytes:
    return framing.encode_multi_hunk(chunks)


def _echo_tun(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield from requests


def _echo_multi(requests: Iterator[list[bytes]], context: Any) -> Iterator[list[bytes]]:
    for chunks in requests:
        yield [b"".join(chunks)]  # regrouped: the data are what counts


def grpc_server(service: str, tun: str, multi: str, credentials: Any = None) -> tuple[Any, int]:
    """A grpcio server echoing Hunks on ``/<service>/<tun>`` and MultiHunks on
    ``/<service>/<multi>``; (server, port)."""
    handlers = {
        tun: grpc.stream_stream_rpc_method_handler(
            _echo_tun, request_deserializer=framing.decode_hunk,
            response_serializer=framing.encode_hunk),
        multi: grpc.stream_stream_rpc_method_handler(
            _echo_multi, request_deserializer=framing.decode_multi_hunk,
            response_serializer=_multi_serialize),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    address = "127.0.0.1:0"
    port = (server.add_secure_port(address, credentials) if credentials is not None
            else server.add_insecure_port(address))
    server.start()
    return server, port


def grpc_client_echo(channel: Any, path: str, multi: bool, size: int) -> tuple[str, str]:
    """Stream ``size`` bytes to ``path`` on ``channel`` (blocking: run in a thread), read the
    echo; (sha256 sent, sha256 received)."""
    if multi:
        call = channel.stream_stream(path, request_serializer=_multi_serialize,
                                     response_deserializer=framing.decode_multi_hunk)
    else:
        call = channel.stream_stream(path, request_serializer=framing.encode_hunk,
                                     response_deserializer=framing.decode_hunk)
    sent = hashlib.sha256()
    pieces: queue.Queue[bytes | None] = queue.Queue()
    block = os.urandom(60_000)
    for i in range(0, size, len(block)):
        piece = bytes([i % 251]) + block[1:min(len(block), size - i)]
        sent.update(piece)
        pieces.put(piece)
    pieces.put(None)

    def requests() -> Iterator[Any]:
        while (piece := pieces.get()) is not None:
            yield [piece[:100], piece[100:]] if multi else piece

    got = hashlib.sha256()
    received = 0
    for message in call(requests(), timeout=60):
        data = b"".join(message) if multi else message
        got.update(data)
        received += len(data)
    if received != size:
        raise AssertionError(f"echo returned {received} of {size} bytes")
    return sent.hexdigest(), got.hexdigest()


class GRPCCoreInterop(TransportTestCase):
    """vtwist's gun transport and grpcio, both ways."""

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        clean_h2(self)

    def server_credentials(self) -> Any:
        with open(self.fx.key_file, "rb") as k, open(self.fx.cert_file, "rb") as c:
            return grpc.ssl_server_credentials([(k.read(), c.read())])

    def channel(self, port: int, tls: bool) -> Any:
        if not tls:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        else:
            with open(self.fx.ca_file, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            channel = grpc.secure_channel(
                f"127.0.0.1:{port}", credentials,
                options=[("grpc.ssl_target_name_override", "example.test")])
        self.addCleanup(channel.close)
        return channel

    async def vtwist_to_grpcio(self, service_name: str, service: str, tun: str, multi: str,
                               mode: str, tls: bool) -> None:
        server, port = grpc_server(service, tun, multi,
                                   self.server_credentials() if tls else None)
        self.addCleanup(server.stop, None)
        extra = f":tls=true:serverName=example.test:caFile={self.fx.ca_file}" if tls else ""
        endpoint = clientFromString(
            reactor, f"grpc:host=127.0.0.1:port={port}:serviceName={service_name}:mode={mode}"
                     + extra)
        for _ in range(2):  # twice: the second stream reuses the connection
            await self.transfer(endpoint, SIZE)

    async def grpcio_to_vtwist(self, service_name: str, path: str, multi: bool,
                               tls: bool) -> None:
        tls_part = f":certFile={self.fx.cert_file}:keyFile={self.fx.key_file}" if tls else ""
        port = await self.listen(
            serverFromString(reactor, f"grpc:port=0:interface=127.0.0.1:"
                                      f"serviceName={service_name}{tls_part}"),
            protocol.Factory.forProtocol(Echo))
        channel = self.channel(port.getHost().port, tls)
        sent, got = await threads.deferToThread(grpc_client_echo, channel, path, multi, SIZE)
        self.assertEqual(got, sent)

    async def test_vtwist_client_gun_h2c(self) -> None:
        await self.vtwist_to_grpcio("svc", "svc", "Tun", "TunMulti", "gun", tls=False)

    async def test_vtwist_client_multi_tls(self) -> None:
        await self.vtwist_to_grpcio("svc", "svc", "Tun", "TunMulti", "multi", tls=True)

    async def test_vtwist_client_custom_path(self) -> None:
        """Xray's full path: ``/my/sample/Tun1`` is service ``my/sample``, method ``Tun1``."""
        await self.vtwist_to_grpcio("/my/sample/Tun1", "my/sample", "Tun1", "Other", "gun",
                                    tls=False)

    async def test_grpcio_client_gun_tls(self) -> None:
        await self.grpcio_to_vtwist("svc", "/svc/Tun", multi=False, tls=True)

    async def test_grpcio_client_multi_h2c(self) -> None:
        await self.grpcio_to_vtwist("svc", "/svc/TunMulti", multi=True, tls=False)

    async def test_grpcio_client_custom_path(self) -> None:
        await self.grpcio_to_vtwist("/a/b/T1|M1", "/a/b/M1", multi=True, tls=False)

    async def test_grpcio_client_unknown_method(self) -> None:
        """vtwist's server answers an unknown method as grpc-go does: UNIMPLEMENTED."""
        port = await self.listen(
            serverFromString(reactor, "grpc:port=0:interface=127.0.0.1:serviceName=svc"),
            protocol.Factory.forProtocol(Echo))
        channel = self.channel(port.getHost().port, False)
        with self.assertRaises(grpc.RpcError) as caught:
            await threads.deferToThread(grpc_client_echo, channel, "/svc/Nope", False, 10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


__all__ = ["GRPCCoreInterop", "HashingClient"]
