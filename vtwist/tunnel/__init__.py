"""The middle of the data path: one tunnel service joins every inbound to its outbound.

An inbound parses its handshake, then hands the tunnel service a destination, its transport,
the early bytes, its tag and user, and an :class:`~vtwist.interfaces.IInboundReply`. The
service asks the dispatcher (:mod:`.dispatcher`) for an outbound, connects within the policy's
deadline, answers through the reply, and joins both sides in a :class:`~.relay.Relay`.
:mod:`.packets` is the UDP twin. Nothing else connects an inbound to an outbound.
"""
