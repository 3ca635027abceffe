"""The ``socks`` inbound: SOCKS5 (RFC 1928/1929) and SOCKS4/4a, as V2Ray serves them.

- :mod:`~vtwist.proxy.socks.codec`: sans-IO wire format (events in, bytes out).
- :mod:`~vtwist.proxy.socks.server`: the Twisted Protocol/Factory (handshake, connect, relay).
- :mod:`~vtwist.proxy.socks.udp`: UDP ASSOCIATE relaying through the dispatcher.
- :mod:`~vtwist.proxy.socks.inbound`: V2Ray JSON settings and the registry hook.
"""
