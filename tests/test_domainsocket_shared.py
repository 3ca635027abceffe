"""The UNIX sockets ``--workers`` shares: the supervisor's held socket
(:func:`vtwist.transport.domainsocket.endpoints.hold`) and the workers' adopted ports
(:mod:`vtwist.transport.domainsocket.shared`), in one process on the real reactor."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from vtwist.transport.domainsocket import shared
from vtwist.transport.domainsocket.endpoints import client_endpoint, hold, server_endpoint


class Greeter(Protocol):
    """Writes its factory's name and closes."""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.transport.write(self.factory.name)  # type: ignore[attr-defined]
        self.transport.loseConnection()


class Reader(Protocol):
    """Collects everything; ``done`` fires with it when the server closes."""

    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.data += data

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        self.done.callback(self.data)


def greeter(name: bytes) -> Factory:
    factory = Factory.forProtocol(Greeter)
    factory.name = name  # type: ignore[attr-defined]
    factory.noisy = False
    return factory


class SharedSocketTests(TestCase):

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "s.sock")
        self.addCleanup(shared.install, {})

    @defer.inlineCallbacks
    def greeting(self, address: str) -> Any:
        reader = Reader()
        yield client_endpoint(reactor, address, timeout=10).connect(
            Factory.forProtocol(lambda: reader))
        return (yield reader.done)

    @defer.inlineCallbacks
    def test_two_adopters_one_socket(self) -> Any:
        """The held socket (mode 0666, its lock naming this process) accepts through the
        ports adopting it; one adopter stopping leaves the path and the other serving; the
        held port stopping removes the path and the lock."""
        held = hold(reactor, self.path)
        self.addCleanup(lambda: held.connected and held.stopListening())
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o666)
        self.assertEqual(os.readlink(self.path + ".lock"), str(os.getpid()))
        shared.install({self.path: held.fileno()})
        endpoint = server_endpoint(reactor, self.path)
        self.assertIsInstance(endpoint, shared.SharedUNIXServerEndpoint)
        first = yield endpoint.listen(greeter(b"first"))
        second = yield endpoint.listen(greeter(b"second"))
        seen = set()
        for _ in range(6):
            seen.add((yield self.greeting(self.path)))
        self.assertLessEqual(seen, {b"first", b"second"})

        yield first.stopListening()
        self.assertTrue(stat.S_ISSOCK(os.stat(self.path).st_mode))
        for _ in range(3):
            self.assertEqual((yield self.greeting(self.path)), b"second")
        yield second.stopListening()
        self.assertTrue(os.path.exists(self.path))

        again = yield server_endpoint(reactor, self.path).listen(greeter(b"again"))
        self.assertEqual((yield self.greeting(self.path)), b"again")  # a reload adopts again
        yield again.stopListening()
        yield held.stopListening()
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(os.path.lexists(self.path + ".lock"))

    @defer.inlineCallbacks
    def test_abstract_name(self) -> Any:
        """An abstract name: held, adopted, served, released (no file, no lock)."""
        address = f"\0vtwist-shared-{os.getpid()}-{id(self)}"
        held = hold(reactor, address)
        shared.install({address: held.fileno()})
        port = yield server_endpoint(reactor, address).listen(greeter(b"abstract"))
        self.assertEqual((yield self.greeting(address)), b"abstract")
        yield port.stopListening()
        yield held.stopListening()
        self.assertEqual(os.listdir(self.dir), [])

    def test_not_a_unix_socket(self) -> Any:
        """An inherited fd that is not a UNIX stream socket fails the listen."""
        tcp = socket.socket()
        self.addCleanup(tcp.close)
        d = shared.SharedUNIXServerEndpoint(reactor, tcp.fileno()).listen(greeter(b"x"))
        return self.assertFailure(d, CannotListenError)

    def test_path_locked_by_a_live_process(self) -> None:
        """A path whose lock a live process holds cannot be held (as one process)."""
        os.symlink(str(os.getpid()), self.path + ".lock")
        self.assertRaises(CannotListenError, hold, reactor, self.path)
