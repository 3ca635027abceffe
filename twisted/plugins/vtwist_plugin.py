"""twistd dropin: ``twistd -n vtwist [--config FILE]``. Imports nothing heavy."""

from twisted.application.service import ServiceMaker

vtwist = ServiceMaker(
    "vtwist",
    "vtwist.tap",
    "V2Ray-compatible proxy (SOCKS5, VMess, mKCP, TLS, WebSocket)",
    "vtwist",
)
