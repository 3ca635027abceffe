"""Endpoint string parsers for the tunnels over HTTP/2:
``serverFromString(reactor, "h2:port=8443:path=/tunnel:hostHeader=example.com")``,
``clientFromString(reactor, "h2:host=example.com:port=443:tls=true:path=/tunnel")``,
``serverFromString(reactor, "grpc:port=8443:serviceName=svc")`` and
``clientFromString(reactor, "grpc:host=example.com:serviceName=svc:mode=multi")``.

Kept cheap to import (it needs only :mod:`vtwist.transport.plugin_parsers`): the rest
of vtwist is loaded only when such a string is parsed, and then the
prefix's parser comes from vtwist's network registry.
"""

from __future__ import annotations

from vtwist.transport.plugin_parsers import client_parser, server_parser

h2ServerParser = server_parser("h2")
h2ClientParser = client_parser("h2")
grpcServerParser = server_parser("grpc")
grpcClientParser = client_parser("grpc")
