"""V2Ray's gRPC API (``"api": {"tag", "services"}``) served on the inbound routed to it.

* :mod:`.server` — gRPC over HTTP/2 (``h2``), unary calls only, as V2Ray's API uses;
* :mod:`.services` — the service registry: full gRPC service name -> ``"module:build"``;
* :mod:`.context` — :class:`~.context.ApiContext`, what a service's ``build`` gets;
* :mod:`.errors` — :class:`~.errors.GrpcError` and the status codes;
* :mod:`.v2raypb` — Python modules generated from V2Ray 4.34's ``.proto`` files
  (``tools/gen_protos.sh``).
"""
