"""``network: "ws"``: WebSocket above TCP (and TLS), as V2Ray 4.34 speaks it.

* :mod:`.settings` -- ``wsSettings`` (plain data and its parser; no Twisted);
* :mod:`.http` -- the HTTP answers and checks of the upgrade, like Go's (sans-IO);
* :mod:`.layer` -- the WebSocket layer (wsproto), its endpoints and ``IStreamLayer``.
"""
