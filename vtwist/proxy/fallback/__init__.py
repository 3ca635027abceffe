"""Fallbacks shared by VLESS and Trojan: a connection that is not a valid request is handed,
with the bytes already read, to a local web server (or any ``dest``), as V2Ray 4.34 does.

- :mod:`.settings` (no Twisted): ``Fallback`` and ``parse_fallbacks(node)``.
- :mod:`.choose` (sans-IO): ``choose_fallback(fallbacks, alpn, first_bytes)``.
- :mod:`.proxyheader` (sans-IO): PROXY protocol v1/v2 headers.
- :mod:`.handoff` (Twisted): ``hand_off(transport, fallback, early, reactor)``.
"""
