"""``network: "ws"``: WebSocket above TCP (and TLS), as V2Ray 4.34 speaks it.

* :mod:`.settings` -- ``wsSettings`` (plain data and its parser; no Twisted);
* :mod:`.http` -- the HTTP answers and checks of the upgrade, like Go's (sans-IO);
* :mod:`.client_upgrade` -- the client's upgrade request and its check of the 101 (sans-IO);
* :mod:`.frames` -- RFC 6455 frames after the upgrade (sans-IO);
* :mod:`.layer` -- the WebSocket layer, its endpoints and ``IStreamLayer``.
"""
