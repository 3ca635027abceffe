"""The relay: forwarding, producers both ways, half-close and V2Ray's idle timers."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vtwist.policy import LevelPolicy
from vtwist.testing.doubles import HalfCloseTransport
from vtwist.tunnel.relay import INBOUND, OUTBOUND, Relay, RelayProtocol

POLICY = LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.a = HalfCloseTransport()
        self.b = HalfCloseTransport()
        self.finished = []
        self.relay = Relay(self.a, self.b, self.clock, POLICY,
                           onFinish=lambda: self.finished.append(True))

    def test_producers_registered_both_ways(self) -> None:
        """Each transport pauses the other: a slow side stops reading on the fast one."""
        self.assertIs(self.a.producer, self.b)
        self.assertTrue(self.a.streaming)
        self.assertIs(self.b.producer, self.a)

    def test_forwarding(self) -> None:
        self.relay.received(INBOUND, b"up")
        self.relay.receivedSequence(OUTBOUND, [b"do", b"wn"])
        self.assertEqual(self.b.value(), b"up")
        self.assertEqual(self.a.value(), b"down")
        self.assertEqual(self.relay.bytes, [2, 4])

    def test_half_close(self) -> None:
        """A FIN from the client half-closes the target; the reply still flows."""
        self.relay.eof(INBOUND)
        self.assertTrue(self.b.writeClosed)
        self.assertFalse(self.a.disconnecting)
        self.relay.received(OUTBOUND, b"reply")
        self.assertEqual(self.a.value(), b"reply")
        self.relay.eof(OUTBOUND)
        self.assertTrue(self.a.writeClosed)
        self.assertTrue(self.a.disconnecting)
        self.assertTrue(self.b.disconnecting)
        self.assertEqual(self.finished, [True])

    def test_second_eof_ends_and_closes_in_one_step(self) -> None:
        """The EOF that ends both directions: a transport with ``endAndClose`` (VMess) gets
        that instead of a half-close and a close, after its producer is unregistered (a
        TLS close waits for its producer)."""
        calls: list[object] = []

        class EndAndClose(HalfCloseTransport):
            def endAndClose(self) -> None:
                calls.append(self.producer)
                self.loseConnection()

        self.relay.finish()  # (setUp's relay: not this test's)
        finished: list[bool] = []
        a, b = EndAndClose(), HalfCloseTransport()
        relay = Relay(a, b, self.clock, POLICY, onFinish=lambda: finished.append(True))
        relay.eof(INBOUND)  # the first: b half-closes as usual
        self.assertTrue(b.writeClosed)
        self.assertEqual(calls, [])
        relay.eof(OUTBOUND)
        self.assertEqual(calls, [None])
        self.assertFalse(a.writeClosed)
        self.assertTrue(a.disconnecting and b.disconnecting)
        self.assertEqual(finished, [True])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_closes_other(self) -> None:
        self.relay.lost(OUTBOUND, Failure(ConnectionDone()))
        self.assertTrue(self.a.disconnecting)
        self.assertEqual(self.finished, [True])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_conn_idle(self) -> None:
        """connIdle: closes after between T and 2T of silence, not while data flows."""
        for _ in range(10):
            self.clock.advance(200)
            self.relay.received(INBOUND, b"x")
        self.assertFalse(self.a.disconnecting)
        self.clock.advance(300)
        self.assertFalse(self.a.disconnecting)
        self.clock.advance(300)
        self.assertTrue(self.a.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_downlink_only_after_uplink_ends(self) -> None:
        self.relay.eof(INBOUND)
        self.clock.advance(4.9)
        self.assertFalse(self.a.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.a.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_uplink_only_after_downlink_ends(self) -> None:
        self.relay.eof(OUTBOUND)
        self.assertTrue(self.a.writeClosed)
        self.clock.advance(1.9)
        self.assertFalse(self.b.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.b.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothing_after_finish(self) -> None:
        self.relay.finish()
        self.relay.received(INBOUND, b"late")
        self.relay.eof(INBOUND)
        self.assertEqual(self.b.value(), b"")
        self.assertFalse(self.b.writeClosed)


class WriteHighWaterTests(SynchronousTestCase):
    def test_socket_under_layers(self) -> None:
        """The TCP connection under wrapping layers pauses its producer past 256 KiB only."""
        from twisted.internet.tcp import Connection

        from vtwist.transport.internals import WRITE_HIGH_WATER, raise_write_high_water

        tcp = object.__new__(Connection)
        tcp.dataBuffer = b""
        tcp._tempDataLen = 0
        tcp.bufferSize = 65536

        class Layer:
            lowerTransport = tcp

        class Outer:
            transport = Layer()

        raise_write_high_water(Outer())
        tcp._tempDataLen = 200_000
        self.assertFalse(tcp._isSendBufferFull())
        tcp._tempDataLen = WRITE_HIGH_WATER + 1
        self.assertTrue(tcp._isSendBufferFull())
        raise_write_high_water(HalfCloseTransport())  # not a socket: left alone, no error


class RelayProtocolTests(SynchronousTestCase):
    def test_holds_until_attached(self) -> None:
        """Bytes that arrive before attach pause the connection and are replayed in order,
        then reading resumes; a connection that sends nothing first is never paused."""
        protocol = RelayProtocol()
        target = HalfCloseTransport()
        protocol.makeConnection(target)
        self.assertEqual(target.producerState, "producing")
        protocol.dataReceived(b"banner ")
        self.assertEqual(target.producerState, "paused")
        protocol.dataReceived(b"line")
        client = HalfCloseTransport()
        relay = Relay(client, target, Clock(), POLICY)
        protocol.attach(relay)
        self.assertEqual(client.value(), b"banner line")
        self.assertEqual(target.producerState, "producing")

    def test_lost_before_attach(self) -> None:
        protocol = RelayProtocol()
        target = HalfCloseTransport()
        protocol.makeConnection(target)
        protocol.dataReceived(b"bye")
        protocol.connectionLost(Failure(ConnectionDone()))
        client = HalfCloseTransport()
        relay = Relay(client, target, Clock(), POLICY)
        protocol.attach(relay)
        self.assertEqual(client.value(), b"bye")
        self.assertTrue(client.disconnecting)
        self.assertTrue(relay.finished)
