"""WebSocket over the TLS layer, in memory: the upgrade, messages, and a close whose close
frame and close_notify leave in one write on each side."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.test.iosim import connect
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tls_memory import (
    NAME,
    App,
    CountingTransport,
    client_settings,
    server_settings,
)
from vtwist.transport.layer import LayerFactory
from vtwist.transport.tls import layer as tls
from vtwist.transport.tls.context import (
    ClientCreatorCache,
    RotatingServerOptions,
    server_context_factory,
)
from vtwist.transport.ws.layer import WSClientLayer, WSServerLayer
from vtwist.transport.ws.settings import WSSettings


class WSOverTLS:
    """A ws client over a TLS client, and a ws server over a TLS server, joined in memory."""

    def __init__(self, test: SynchronousTestCase) -> None:
        clock = task.Clock()
        settings = WSSettings(path="/ws")
        options = RotatingServerOptions(
            lambda: server_context_factory(server_settings(), ["http/1.1"]))
        creator = ClientCreatorCache().get(client_settings(), NAME, ["http/1.1"])
        self.server_app, self.client_app = App(), App(b"hello")
        server_factory = Factory.forProtocol(lambda: self.server_app)
        client_factory = Factory.forProtocol(lambda: self.client_app)
        self.ready: Deferred = Deferred()
        self.server = tls.TLSLayer(
            LayerFactory(lambda: WSServerLayer(server_factory, settings, clock), server_factory),
            options, False, clock=clock)
        self.client = tls.TLSLayer(
            LayerFactory(lambda: WSClientLayer(client_factory, self.ready, NAME, settings,
                                               clock)),
            creator, True, Deferred(), NAME, clock)
        self.server_wire = CountingTransport(self.server, True)
        self.client_wire = CountingTransport(self.client, False)
        self.pump = connect(self.server, self.server_wire, self.client, self.client_wire,
                            greet=False)
        test.addCleanup(clock.advance, 60)

    def run(self) -> None:
        self.pump.pump()
        self.pump.flush()


class WSOverTLSTests(SynchronousTestCase):
    def test_close_frame_and_close_notify_in_one_write(self) -> None:
        """The client closes: its close frame and close_notify go in one write, and the
        server's answering close frame and close_notify in one more; both ends see a clean
        close."""
        pair = WSOverTLS(self)
        pair.run()
        self.assertEqual(pair.server_app.received, [b"hello"])
        pair.server_app.transport.write(b"answer")
        pair.run()
        self.assertEqual(pair.client_app.received, [b"answer"])
        client_writes, server_writes = pair.client_wire.writes, pair.server_wire.writes
        pair.client_app.transport.loseConnection()
        pair.run()
        self.assertEqual(pair.client_wire.writes - client_writes, 1)
        self.assertEqual(pair.server_wire.writes - server_writes, 1)
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)
        self.assertIsInstance(pair.client_app.reason.value, ConnectionDone)
        self.assertTrue(pair.client_wire.disconnecting and pair.server_wire.disconnecting)

    def test_message_close_frame_and_close_notify_in_one_write(self) -> None:
        """``closeWith(data)`` on the ws layer (what VMess's end chunk and close use): the
        message, the close frame and the close_notify leave in one write; the server
        gets the message, then a clean close."""
        pair = WSOverTLS(self)
        pair.run()
        writes = pair.client_wire.writes
        pair.client_app.transport.closeWith(b"last words")
        pair.run()
        self.assertEqual(pair.client_wire.writes - writes, 1)
        self.assertEqual(pair.server_app.received, [b"hello", b"last words"])
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)
        self.assertIsInstance(pair.client_app.reason.value, ConnectionDone)

    def test_close_with_a_producer_registered_waits_for_it(self) -> None:
        """A close while the application's producer is registered below: the close frame
        still goes (the close_notify once the producer is gone), as without closeWith."""
        pair = WSOverTLS(self)
        pair.run()

        class Producer:
            def pauseProducing(self) -> None: ...
            def resumeProducing(self) -> None: ...
            def stopProducing(self) -> None: ...

        transport = pair.client_app.transport
        transport.registerProducer(Producer(), True)
        transport.loseConnection()
        pair.run()
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)
        transport.unregisterProducer()
        pair.run()
        self.assertIsInstance(pair.client_app.reason.value, ConnectionDone)
