"""Shadowsocks (AEAD ciphers, as V2Ray 4.34 speaks them): inbound and outbound.

``aead`` and ``codec`` are the sans-IO wire format, ``replay`` the server's salt filter,
``settings`` the JSON settings and registry entries, ``server`` the inbound, ``outbound``
the outbound.
"""
