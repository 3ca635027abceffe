"""mKCP, V2Ray 4.34's own KCP variant, byte-compatible with V2Ray.

Sans-IO core (no reactor imports, time is a parameter):

* :mod:`.segment` -- DATA / ACK / command segment codec and V2Ray's multi-segment parser;
* :mod:`.crypt` -- the simple authenticator (FNV-1a + XOR chain) and ``seed`` AES-128-GCM;
* :mod:`.obfs` -- header obfuscation: none, srtp, utp, wechat-video, dtls, wireguard;
* :mod:`.config` -- ``kcpSettings`` (defaults, ranges) and the window sizes derived from it
  (the receive window: V2Ray's, or what ``readBufferSize`` holds when that is more);
* :mod:`.sender` -- the send window: queue, segments in flight, loss detection by
  transmission order, retransmission, acks received;
* :mod:`.receiver` -- the receive window: reassembly, acks to send, window updates;
* :mod:`.rtt` -- the RTT/RTO estimate and the optional congestion window;
* :mod:`.session` -- the state machine joining them (close handshake, pings, timers).

Twisted side:

* :mod:`.protocol` -- the listening ``DatagramProtocol`` (session demultiplexing), the
  per-connection client socket, and :class:`~.protocol.KCPTransport`, a stream transport;
* :mod:`.endpoints` -- ``KCPServerEndpoint`` / ``KCPClientEndpoint`` and the ``kcp:``
  endpoint-string parsers (registered in ``twisted/plugins/vtwist_kcp_endpoints.py``).
"""
