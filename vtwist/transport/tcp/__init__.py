"""``network: "tcp"``: plain TCP, optionally with V2Ray's HTTP header disguise.

* :mod:`.settings` -- ``tcpSettings`` (plain data and its parser; no Twisted);
* :mod:`.header` -- the disguise's request/response header bytes (sans-IO);
* :mod:`.endpoints` -- the TCP endpoints under TLS (tcp and ws ride them);
* :mod:`.disguise` -- the HTTP header disguise as a layer (an ``IStreamLayer``).
"""
