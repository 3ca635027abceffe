"""vtwist: V2Ray's protocols (SOCKS5, VMess, mKCP, TLS, WebSocket) on Twisted."""

__version__ = "0.1.0"
