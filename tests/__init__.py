"""vtwist's test suite.

grpcio (a test-only dependency: the HandlerService client and the gRPC C-core peer) installs
fork handlers that restart its pollers in a forked child; a child that then closes its
descriptors before exec (every subprocess the interop tests start: v2ray, nginx, vtwist) can
die there ("epoll_wait error: Bad file descriptor" in its log). The tests fork only to exec,
so the handlers are switched off before anything imports grpc.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# Hypothesis: no per-example deadline and no "input generation is slow" health check for
# the whole suite. Both measure the machine, not the code: a CI run on two busy cores
# failed a routing property test that way. Tests keep their own max_examples.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the suite's own dependencies install it; keep importable without
    pass
else:
    settings.register_profile("vtwist", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("vtwist")

# The suite runs on the reactor vtwist's processes run on: its epoll loop calls readiness
# handlers directly and finishes closes with nothing queued at the end of the turn
# (vtwist.transport.internals.lean_poll, which `vtwist run` and twistd apply too).
from twisted.internet import reactor as _reactor  # noqa: E402

from vtwist.transport.internals import lean_poll as _lean_poll  # noqa: E402

_lean_poll(_reactor)
