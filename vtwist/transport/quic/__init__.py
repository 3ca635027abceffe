"""QUIC transport (``"network": "quic"``): V2Ray 4.34's QUIC on aioquic, one QUIC stream per
proxied connection, optional packet obfuscation (:mod:`.packet`)."""
