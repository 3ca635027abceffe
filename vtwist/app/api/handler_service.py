"""``v2ray.core.app.proxyman.command.HandlerService``: add and remove inbounds, outbounds
and users of a running vtwist, as panels (x-ui, V2bX...) drive V2Ray 4.34.

* ``AlterInbound`` with ``AddUserOperation`` / ``RemoveUserOperation``: VMess, VLESS and
  Trojan inbounds, through :mod:`vtwist.app.users` (the path a reload uses too). An added
  user connects at once; a removed user's new connections are refused, its live ones go on.
  Shadowsocks inbounds have one account, as in 4.34: "proxy is not a UserManager".
* ``AddInbound`` / ``AddOutbound``: the protobuf handler config becomes V2Ray JSON
  (:mod:`.handler_config`) and goes through the config loader, so it is checked as in a
  file. The answer comes once the new inbound listens.
* ``RemoveInbound``: the inbound stops listening; its connections drain (up to the policy's
  idle time), as a reload drains a removed inbound. ``RemoveOutbound``: new connections
  stop using it; it closes after the idle time.

Errors: a tag no handler has is NOT_FOUND; a request or account that does not decode or
does not validate is INVALID_ARGUMENT; what V2Ray refuses (a user that already exists or
is not there, an inbound that is not a user manager) is UNKNOWN with V2Ray's words.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.logger import Logger

from vtwist.app.api.errors import GrpcError, Status, decode
from vtwist.app.api.handler_config import inbound_json, outbound_json, unpack, user_json
from vtwist.app.api.v2raypb import app_proxyman_command_command_pb2 as pb
from vtwist.app.reload import drain_group, drain_time, register_stats, retire_outbound
from vtwist.app.users import UserError, add_user, remove_user, user_set
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node

log = Logger(namespace="vtwist.api")

ADD_USER = pb.AddUserOperation.DESCRIPTOR.full_name
REMOVE_USER = pb.RemoveUserOperation.DESCRIPTOR.full_name


def _warn(message: str) -> None:
    log.warn("api: {message}", message=message)


class HandlerService:
    """The methods, over the running :class:`~vtwist.service.VTwistService`."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.methods = {"AddInbound": self.AddInbound, "RemoveInbound": self.RemoveInbound,
                        "AlterInbound": self.AlterInbound, "AddOutbound": self.AddOutbound,
                        "RemoveOutbound": self.RemoveOutbound,
                        "AlterOutbound": self.AlterOutbound}

    @property
    def service(self) -> Any:
        """The running service (its config, inbound groups, dispatcher, build context)."""
        return self.context.service

    def _inbound(self, tag: str) -> int:
        for index, inbound in enumerate(self.service.config.inbounds):
            if tag and inbound.tag == tag:
                return index
        raise GrpcError(Status.NOT_FOUND, f"failed to get handler: {tag} > handler not "
                        f"found: {tag}")

    # -- users --------------------------------------------------------------------------
    def AlterInbound(self, data: bytes) -> bytes:
        """AddUserOperation / RemoveUserOperation on the inbound tagged ``tag``."""
        request = decode(pb.AlterInboundRequest, data)
        operation = request.operation
        if operation.type not in (ADD_USER, REMOVE_USER):
            raise GrpcError(Status.INVALID_ARGUMENT,
                            f"unknown operation {operation.type or 'nothing'!r}")
        index = self._inbound(request.tag)
        inbound = self.service.config.inbounds[index]
        group = self.service.inbound_groups[index]
        factory = getattr(group[0], "factory", None) if group else None
        users = user_set(inbound.protocol, factory) if factory is not None else None
        if users is None:
            raise GrpcError(Status.UNKNOWN, "proxy is not a UserManager")
        try:
            if operation.type == ADD_USER:
                op = unpack(operation, pb.AddUserOperation, "operation")
                account = self._account(inbound.protocol, op.user)
                add_user(users, account)
                log.info("api: user {who} added to inbound {tag}", who=op.user.email or "?",
                         tag=request.tag)
            else:
                op = unpack(operation, pb.RemoveUserOperation, "operation")
                remove_user(users, op.email)
                log.info("api: user {who} removed from inbound {tag}", who=op.email,
                         tag=request.tag)
        except UserError as e:
            raise GrpcError(Status.UNKNOWN, str(e)) from None
        return pb.AlterInboundResponse().SerializeToString()

    @staticmethod
    def _account(protocol: str, user: Any) -> Any:
        """The protocol's account for a protobuf User, validated as a config's client."""
        from vtwist.config.registry import inbound_spec

        kind, client = user_json(user)
        if kind != protocol:
            raise GrpcError(Status.INVALID_ARGUMENT,
                            f"a {kind} account cannot be a user of a {protocol} inbound")
        settings = {"clients": [client]}
        if protocol == "vless":
            settings["decryption"] = "none"
        try:
            parsed = inbound_spec(protocol).parse_settings(  # type: ignore[union-attr]
                Node(settings, "user", _warn))
        except ConfigError as e:
            raise GrpcError(Status.INVALID_ARGUMENT, f"invalid user: {e}") from None
        return parsed.clients[0]

    # -- inbounds -----------------------------------------------------------------------
    @inlineCallbacks
    def AddInbound(self, data: bytes) -> Any:
        """Add (and start) an inbound; answers once it listens."""
        from vtwist.config.loader import parse_inbound
        from vtwist.service import inbound_services

        request = decode(pb.AddInboundRequest, data)
        entry = inbound_json(request.inbound)
        service = self.service
        if entry["tag"] and any(i.tag == entry["tag"] for i in service.config.inbounds):
            raise GrpcError(Status.ALREADY_EXISTS, f"existing tag found: {entry['tag']}")
        try:
            inbound = parse_inbound(Node(entry, "inbound", _warn))
            group = inbound_services(inbound, service.ctx)
        except (ConfigError, ValueError, OSError) as e:
            raise GrpcError(Status.INVALID_ARGUMENT, f"invalid inbound: {e}") from None
        for svc in group:
            svc.setServiceParent(service)
        waiting = [s.listening for s in group if s.listening is not None]
        if waiting:
            yield DeferredList(waiting, consumeErrors=True)
        failed = [s.failure for s in group if getattr(s, "failure", None) is not None]
        if failed:
            yield drain_group(service, group, 0)
            service.ctx.inbounds.pop(inbound.tag, None)
            raise GrpcError(Status.UNKNOWN, f"failed to listen: "
                            f"{failed[0].getErrorMessage()}")
        service.config.inbounds = [*service.config.inbounds, inbound]
        service.inbound_groups = [*service.inbound_groups, group]
        service.inbound_services = [*service.inbound_services, *group]
        register_stats(service, "inbound", inbound.tag)
        log.info("api: inbound {tag} added", tag=inbound.tag)
        return pb.AddInboundResponse().SerializeToString()

    def RemoveInbound(self, data: bytes) -> Deferred[bytes]:
        """Stop an inbound listening; its connections drain."""
        request = decode(pb.RemoveInboundRequest, data)
        service = self.service
        index = self._inbound(request.tag)
        group = service.inbound_groups[index]
        service.config.inbounds = [i for n, i in enumerate(service.config.inbounds)
                                   if n != index]
        service.inbound_groups = [g for n, g in enumerate(service.inbound_groups)
                                  if n != index]
        service.inbound_services = [s for g in service.inbound_groups for s in g]
        service.ctx.inbounds.pop(request.tag, None)
        log.info("api: inbound {tag} removed", tag=request.tag)
        d = drain_group(service, group, drain_time(service.config))
        return d.addCallback(lambda _: pb.RemoveInboundResponse().SerializeToString())

    # -- outbounds ----------------------------------------------------------------------
    def AddOutbound(self, data: bytes) -> bytes:
        """Add an outbound (routing can send to its tag from now on; the first outbound
        of an empty set becomes the default)."""
        from vtwist.config.loader import parse_outbound
        from vtwist.config.registry import outbound_spec

        request = decode(pb.AddOutboundRequest, data)
        entry = outbound_json(request.outbound)
        service = self.service
        dispatcher = service.dispatcher
        tag = entry["tag"]
        if tag and tag in dispatcher.by_tag:
            raise GrpcError(Status.ALREADY_EXISTS, f"existing tag found: {tag}")
        try:
            outbound_config = parse_outbound(Node(entry, "outbound", _warn))
            if outbound_config.proxy_tag and \
                    outbound_config.proxy_tag not in service.ctx.outbounds:
                raise ConfigError("outbound.proxySettings.tag",
                                  f"no outbound has tag {outbound_config.proxy_tag!r}")
            outbound = outbound_spec(outbound_config.protocol).build(  # type: ignore[union-attr]
                outbound_config, service.ctx)
        except (ConfigError, ValueError, OSError) as e:
            raise GrpcError(Status.INVALID_ARGUMENT, f"invalid outbound: {e}") from None
        dispatcher.outbounds.append(outbound)
        if tag:
            dispatcher.by_tag[tag] = outbound
            service.ctx.outbounds[tag] = outbound
        if dispatcher.default is None:
            dispatcher.default = outbound
        service.config.outbounds = [*service.config.outbounds, outbound_config]
        register_stats(service, "outbound", tag)
        log.info("api: outbound {tag} added", tag=tag)
        return pb.AddOutboundResponse().SerializeToString()

    def RemoveOutbound(self, data: bytes) -> bytes:
        """Take an outbound out of routing; it closes after the policy's idle time. When it
        was the default, the first outbound left becomes the default."""
        request = decode(pb.RemoveOutboundRequest, data)
        service = self.service
        dispatcher = service.dispatcher
        outbound = dispatcher.by_tag.get(request.tag) if request.tag else None
        if outbound is None:
            raise GrpcError(Status.NOT_FOUND, f"outbound not found: {request.tag}")
        index = dispatcher.outbounds.index(outbound)
        del dispatcher.outbounds[index]
        del dispatcher.by_tag[request.tag]
        service.ctx.outbounds.pop(request.tag, None)
        if dispatcher.default is outbound:
            dispatcher.default = dispatcher.outbounds[0] if dispatcher.outbounds else None
        service.config.outbounds = [o for o in service.config.outbounds
                                    if o.tag != request.tag]
        retire_outbound(service, outbound, drain_time(service.config))
        log.info("api: outbound {tag} removed", tag=request.tag)
        return pb.RemoveOutboundResponse().SerializeToString()

    def AlterOutbound(self, data: bytes) -> bytes:
        """4.34 has no outbound operation: every one is refused."""
        request = decode(pb.AlterOutboundRequest, data)
        raise GrpcError(Status.UNKNOWN, f"not an outbound operation: "
                        f"{request.operation.type or 'nothing'}")


def build(context: Any) -> HandlerService:
    """The service for the API's registry."""
    return HandlerService(context)
