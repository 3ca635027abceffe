"""vtwist's test suite.

grpcio (a test-only dependency: the HandlerService client and the gRPC C-core peer) installs
fork handlers that restart its pollers in a forked child; a child that then closes its
descriptors before exec (every subprocess the interop tests start: v2ray, nginx, vtwist) can
die there ("epoll_wait error: Bad file descriptor" in its log). The tests fork only to exec,
so the handlers are switched off before anything imports grpc.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
