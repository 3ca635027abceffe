"""``network: "h2"`` (or ``"http"``, V2Ray's name): V2Ray 4.34's HTTP/2 transport, and the HTTP/2 layer
the gRPC gun transport shares.

* :mod:`.settings` -- ``httpSettings`` (plain data and its parser; no Twisted);
* :mod:`.profile` -- what a tunnel's requests and answers say, its body codec (sans-IO);
* :mod:`.connection` -- one HTTP/2 connection (``h2``) carrying streams, flow control;
* :mod:`.endpoints` -- server/client endpoints, the client's connection pool, the layer;
* :mod:`.network` -- the http network's layer and endpoint strings.
"""
