"""``security: "tls"``: tlsSettings, the OpenSSL contexts, and the TLS layer.

* :mod:`.settings` -- ``tlsSettings`` and its certificates (plain data; no Twisted);
* :mod:`.context` -- server contexts (SNI, ALPN) and cached client connection creators;
* :mod:`.layer` -- TLS endpoint wrappers and the TLS ``IStreamLayer``.
"""
