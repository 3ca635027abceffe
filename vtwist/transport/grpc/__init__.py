"""``network: "grpc"`` (alias ``gun``): the v2fly/Xray gun tunnel over HTTP/2.

* :mod:`.framing` -- gRPC length-prefixed messages and the ``Hunk``/``MultiHunk`` protobufs
  (sans-IO; reusable by any gRPC speaker);
* :mod:`.settings` -- ``grpcSettings`` (plain data and its parser; no Twisted);
* :mod:`.layer` -- the gun streams on the shared HTTP/2 layer (:mod:`vtwist.transport.h2`).
"""
