"""Hot reload: re-read the config and apply the difference to the running service.

:func:`diff_inbounds` and :func:`reusable_outbounds` are pure: they compare two parsed
configs. :class:`Reloader` applies what they say to a running
:class:`~vtwist.service.VTwistService`:

* an inbound whose listen address, ports, protocol and transport are unchanged keeps its
  listening socket and every live connection: ``keep`` (nothing else changed), ``users``
  (only its users changed: the :mod:`vtwist.app.users` path the API uses too), ``swap``
  (other settings changed: a new factory builds the next connections, see
  :mod:`vtwist.app.switch`);
* a changed inbound (``restart``) gets its new listener first (after the old one released a
  port both use) and the old one stops listening and *drains*: its connections go on for up
  to the policy's idle time, then close; a removed one (``remove``) drains the same way;
* the outbounds and routing switch for new connections at once (an unchanged outbound is
  kept with its mux connections); the outbounds that went are closed after the drain time;
* a changed ``dns`` section gets a new resolver: routing, and every outbound (rebuilt then,
  none kept), resolve through it from then on; the old one closes after the drain time;
* ``policy.system``'s stats switches apply to connections from then on; an inbound that
  routing now sends to the API (or no longer does) gets the gRPC server (or its protocol);
* a changed ``stats``, ``api`` or ``metrics`` section, or changed ``reverse`` bridges, need
  a restart: one warning line each, and the running ones stay;
* a config that fails to parse or build changes nothing: one error line;
* the log files reopen (logrotate), after a refused config too.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredLock,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger

from vtwist.app.switch import SwitchEndpoint
from vtwist.app.users import USER_SETS, apply_users, user_set
from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.config.model import Config, InboundConfig, OutboundConfig

log = Logger(namespace="vtwist.reload")

KEEP, USERS, SWAP, RESTART, ADD, REMOVE = "keep", "users", "swap", "restart", "add", "remove"


@dataclass(frozen=True)
class InboundChange:
    """What a reload does to one inbound: ``kind`` and its index in the old and the new
    config (None for an added or a removed one)."""

    kind: str
    old: int | None
    new: int | None


def listener_key(inbound: InboundConfig) -> tuple[Any, ...]:
    """What decides whether an inbound keeps its listening socket."""
    return (inbound.protocol, inbound.listen, tuple(inbound.ports), inbound.stream,
            inbound.allocate)


def _without_users(inbound: InboundConfig) -> InboundConfig:
    settings = inbound.settings
    if dataclasses.is_dataclass(settings) and hasattr(settings, "clients"):
        settings = dataclasses.replace(settings, clients=[])
    return dataclasses.replace(inbound, settings=settings)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a settings object that cannot compare: changed
        return False


def classify(old: InboundConfig, new: InboundConfig, policy_changed: bool = False) -> str:
    """``keep``, ``users``, ``swap`` or ``restart`` for an inbound in both configs."""
    if not _same(listener_key(old), listener_key(new)):
        return RESTART
    if policy_changed:
        return SWAP
    if _same(old, new):
        return KEEP
    if new.protocol in USER_SETS and _same(_without_users(old), _without_users(new)):
        return USERS
    return SWAP


def match_inbounds(old: Sequence[InboundConfig],
                   new: Sequence[InboundConfig]) -> list[tuple[int | None, int | None]]:
    """Pairs (old index, new index) of the same inbound: by tag, and for untagged ones by
    protocol, listen address and ports. Unpaired ones have None on the other side."""
    used: set[int] = set()
    pairs: list[tuple[int | None, int | None]] = []
    for j, n in enumerate(new):
        found = None
        for i, o in enumerate(old):
            if i in used:
                continue
            if (o.tag or n.tag) and o.tag == n.tag or not (o.tag or n.tag) and (
                    o.protocol, o.listen, o.ports) == (n.protocol, n.listen, n.ports):
                found = i
                break
        if found is not None:
            used.add(found)
        pairs.append((found, j))
    pairs.extend((i, None) for i in range(len(old)) if i not in used)
    return pairs


def diff_inbounds(old: Sequence[InboundConfig], new: Sequence[InboundConfig],
                  policy_changed: bool = False) -> list[InboundChange]:
    """What a reload does to each inbound (see the module's docstring)."""
    changes = []
    for i, j in match_inbounds(old, new):
        if i is None:
            changes.append(InboundChange(ADD, None, j))
        elif j is None:
            changes.append(InboundChange(REMOVE, i, None))
        else:
            changes.append(InboundChange(classify(old[i], new[j], policy_changed), i, j))
    return changes


def reusable_outbounds(old: Sequence[OutboundConfig],
                       new: Sequence[OutboundConfig]) -> dict[int, int]:
    """new index -> old index of the outbounds a reload keeps as built: same tag, same
    settings, and (with ``proxySettings``) the outbound it goes through kept too."""
    old_by_tag = {o.tag: i for i, o in enumerate(old) if o.tag}
    new_by_tag = {o.tag: j for j, o in enumerate(new) if o.tag}
    candidates: dict[int, int] = {}
    for j, n in enumerate(new):
        i = old_by_tag.get(n.tag) if n.tag else (
            j if j < len(old) and not old[j].tag else None)
        if i is not None and _same(old[i], n):
            candidates[j] = i
    changed = True
    while changed:  # drop those whose chain goes through one not kept
        changed = False
        for j in list(candidates):
            through = new[j].proxy_tag
            if through and new_by_tag.get(through) not in candidates:
                del candidates[j]
                changed = True
    return candidates


def needs_restart(old: Config, new: Config) -> list[str]:
    """The sections a reload cannot apply that differ between ``old`` and ``new``."""
    def bridges(config: Config) -> list[Any]:
        return list(getattr(config.reverse, "bridges", None) or [])

    changed = []
    if old.stats != new.stats:
        changed.append("the stats section")
    if not _same(old.api, new.api):
        changed.append("the api section")
    if not _same(old.metrics, new.metrics):
        changed.append("the metrics section")
    if not _same(bridges(old), bridges(new)):
        changed.append("reverse.bridges")
    return changed


def drain_time(config: Config) -> float:
    """How long a drained inbound's connections may go on: the longest idle timeout of the
    policy's levels (V2Ray's default 300 s)."""
    from vtwist.policy import DEFAULT_LEVEL

    levels = list(config.policy.levels.values()) or [DEFAULT_LEVEL]
    return max(level.conn_idle for level in levels)


class Drains(Service):
    """What a reload left behind: factories whose connections drain (closed after a
    deadline or at stop), replaced factories of kept sockets and outbounds that went
    (closed at stop, or after the deadline)."""

    name = "vtwist-drains"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.factories: list[Any] = []
        self.outbounds: list[Any] = []
        self.timers: list[Any] = []

    def drain(self, factory: Any, seconds: float | None) -> None:
        """Close ``factory``'s connections after ``seconds`` (None: at stop only)."""
        self.factories.append(factory)
        if seconds is not None:
            self._later(seconds, lambda: self._close_factory(factory))

    def retire(self, outbound: Any, seconds: float) -> None:
        """Close an outbound no longer in the config after ``seconds``."""
        self.outbounds.append(outbound)
        self._later(seconds, lambda: self._close_outbound(outbound))

    def _later(self, seconds: float, what: Callable[[], None]) -> None:
        self.timers = [t for t in self.timers if t.active()]
        self.timers.append(self.reactor.callLater(seconds, what))

    def _close_factory(self, factory: Any) -> None:
        if factory in self.factories:
            self.factories.remove(factory)
        factory.closeAll()

    def _close_outbound(self, outbound: Any) -> Any:
        if outbound in self.outbounds:
            self.outbounds.remove(outbound)
        return getattr(outbound, "close", lambda: None)()

    def stopService(self) -> Deferred[Any] | None:
        """Close everything left over now."""
        super().stopService()
        for timer in self.timers:
            if timer.active():
                timer.cancel()
        self.timers = []
        for factory in list(self.factories):
            self._close_factory(factory)
        closing = [d for d in (self._close_outbound(o) for o in list(self.outbounds))
                   if isinstance(d, Deferred)]
        return DeferredList(closing, consumeErrors=True) if closing else None


def _drains(service: Any) -> Drains:
    try:
        return service.getServiceNamed(Drains.name)  # type: ignore[no-any-return]
    except KeyError:
        drains = Drains(service.reactor)
        drains.setServiceParent(service)
        return drains


def _detach(svc: Any) -> Deferred[Any]:
    """Take an inbound's service out of the tree and stop it listening, leaving its
    connections alone (a drain closes them later)."""
    parent = svc.parent
    if parent is not None and svc in parent.services:
        parent.services.remove(svc)
        svc.parent = None
    if not hasattr(svc, "port"):  # allocate random: its own generations, closed now
        return maybeDeferred(svc.stopService) if svc.running else succeed(None)
    svc.running = 0
    port, svc.port = svc.port, None
    return maybeDeferred(port.stopListening) if port is not None else succeed(None)


def _addresses(inbound: InboundConfig) -> set[tuple[str, int]]:
    return {(inbound.listen, p) for p in inbound.ports}


def _switchable(group: Sequence[Any]) -> bool:
    return bool(group) and all(
        isinstance(getattr(s, "endpoint", None), SwitchEndpoint) and s.endpoint.switch
        is not None for s in group)


def _inherit(old: Any, new: Any) -> None:
    """A replaced factory hands its replay filters to the new one (a swap must not open a
    replay window)."""
    old_state, new_state = getattr(old, "state", None), getattr(new, "state", None)
    for attr in ("auth_filter", "sessions"):
        if hasattr(old_state, attr) and hasattr(new_state, attr):
            setattr(new_state, attr, getattr(old_state, attr))
    for attr in ("salts", "packet_salts"):
        if hasattr(old, attr) and hasattr(new, attr):
            setattr(new, attr, getattr(old, attr))


def _keep_api_users(old: InboundConfig, replaced: Any, new: InboundConfig,
                    factory: Any) -> None:
    """Users the API added to ``replaced`` (not in the old config) join the new factory."""
    before, after = user_set(old.protocol, replaced), user_set(new.protocol, factory)
    if before is None or after is None:
        return
    configured = list(getattr(old.settings, "clients", []))
    present = after.accounts()
    for account in before.accounts():
        if account not in configured and account not in present:
            after.add(account)


@dataclass
class ReloadResult:
    """What one reload did (counts by change kind; outbounds kept and built)."""

    inbounds: dict[str, int]
    users_added: int = 0
    users_removed: int = 0
    outbounds_kept: int = 0
    outbounds_built: int = 0

    def summary(self) -> str:
        """One line for the log."""
        kinds = ", ".join(f"{n} {k}" for k, n in self.inbounds.items() if n) or "none"
        text = f"inbounds: {kinds}"
        if self.users_added or self.users_removed:
            text += f" (users +{self.users_added} -{self.users_removed})"
        return (text + f"; outbounds: {self.outbounds_kept} kept, "
                f"{self.outbounds_built} built")


class Reloader:
    """Reloads one running service from ``load()`` (the raw config, read again each time).
    Reloads run one after another."""

    def __init__(self, service: Any, load: Callable[[], Any]) -> None:
        self.service = service
        self.load = load
        self._lock = DeferredLock()

    def reload(self) -> Deferred[ReloadResult | None]:
        """Re-read and apply; fires with the :class:`ReloadResult` (None when the new
        config was refused and nothing changed)."""
        return self._lock.run(self._reload)

    def _refuse(self, why: str) -> None:
        self._reopen_logs(None)  # a rotated log still gets its new file (logrotate's HUP)
        log.error("reload: {why}; the running config stays", why=why)

    def _reopen_logs(self, config: Any) -> None:
        logs = getattr(self.service, "logs", None)
        if logs is not None:
            try:
                logs.reopen(config)
            except ConfigError as e:
                log.error("reload: {why}; the log files stay as they were", why=str(e))

    @inlineCallbacks
    def _reload(self) -> Any:
        warnings: list[str] = []
        try:
            config = parse_config(self.load(), warnings.append)
        except ConfigError as e:
            self._refuse(f"config error: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - an unreadable source is one error line too
            self._refuse(f"cannot read the config: {e}")
            return None
        for warning in warnings:
            log.warn("reload: {warning}", warning=warning)
        try:
            plan = self._build(config)
        except (ConfigError, ValueError, OSError) as e:
            self._refuse(f"config error: {e}")
            return None
        result = yield self._apply(config, plan)
        log.info("reload: {summary}", summary=result.summary())
        return result

    def _build(self, config: Config) -> dict[str, Any]:
        """Everything new, built before anything changes (a failure changes nothing)."""
        from vtwist.app.reverse import reverse_portals
        from vtwist.dns.system import routing_lookup
        from vtwist.service import build_inbound_factory, inbound_services
        from vtwist.tunnel.dialer import build_outbounds
        from vtwist.tunnel.dispatcher import Dispatcher
        from vtwist.tunnel.dnsroute import config_resolver

        service = self.service
        old: Config = service.config
        dns_changed = not _same(old.dns, config.dns)
        resolver = getattr(service, "resolver", None)
        if dns_changed:
            resolver = config_resolver(config.dns, service.reactor,
                                       lambda: service.dispatcher)
        ctx = dataclasses.replace(service.ctx, policy=config.policy, outbounds={},
                                  resolver=resolver)
        saved_inbounds = dict(ctx.inbounds)
        operations = getattr(service, "operations", None)
        old_api_tags = set(getattr(operations, "api_tags", set()))
        api_tags = old_api_tags
        if operations is not None and _same(old.api, config.api):
            api_tags = config.api_inbound_tags()  # routing may send other inbounds now
        try:
            # outbounds resolve through the resolver they were built with: none kept
            kept = {} if dns_changed else reusable_outbounds(old.outbounds, config.outbounds)
            old_built = service.dispatcher.outbounds
            reuse = {id(config.outbounds[j]): old_built[i] for j, i in kept.items()
                     if i < len(old_built)}
            outbounds = build_outbounds(config.outbounds, ctx, reuse)
            outbounds += reverse_portals(config.reverse, ctx, old_built)
            old_dispatcher = service.dispatcher
            dispatcher = Dispatcher(outbounds, router=config.routing,
                                    resolver=routing_lookup(resolver) if dns_changed
                                    else old_dispatcher.resolver,
                                    log_access=config.log.access != "none")
            changes = diff_inbounds(old.inbounds, config.inbounds,
                                    not _same(old.policy, config.policy))
            if operations is not None:
                operations.api_tags = api_tags  # what new factories are built with
            groups: dict[int, list[Any]] = {}
            factories: dict[int, Any] = {}
            final: list[InboundChange] = []
            for change in changes:
                if change.kind in (KEEP, USERS) and (
                        old.inbounds[change.old].tag in old_api_tags) != (
                        config.inbounds[change.new].tag in api_tags):
                    change = InboundChange(SWAP, change.old, change.new)  # API <-> protocol
                if change.kind == SWAP and not _switchable(
                        service.inbound_groups[change.old]):
                    change = InboundChange(RESTART, change.old, change.new)
                if change.kind in (ADD, RESTART):
                    groups[change.new] = inbound_services(config.inbounds[change.new], ctx)
                elif change.kind == SWAP:
                    factories[change.new] = build_inbound_factory(
                        config.inbounds[change.new], ctx)
                final.append(change)
        except BaseException:
            ctx.inbounds.clear()
            ctx.inbounds.update(saved_inbounds)
            if operations is not None:
                operations.api_tags = old_api_tags
            if dns_changed and resolver is not None:
                getattr(resolver, "close", lambda: None)()
            raise
        return {"ctx": ctx, "dispatcher": dispatcher, "changes": final, "groups": groups,
                "factories": factories, "kept": kept,
                "resolver": resolver if dns_changed else None,
                "restart": needs_restart(old, config)}

    @inlineCallbacks
    def _apply(self, config: Config, plan: dict[str, Any]) -> Any:
        service = self.service
        old: Config = service.config
        drains = _drains(service)
        seconds = drain_time(config)
        result = ReloadResult({k: 0 for k in (KEEP, USERS, SWAP, RESTART, ADD, REMOVE)},
                              outbounds_kept=len(plan["kept"]),
                              outbounds_built=len(config.outbounds) - len(plan["kept"]))
        # routing and outbounds: every new connection from now on
        old_outbounds = service.dispatcher.outbounds
        dispatcher = plan["dispatcher"]
        service.dispatcher = service.tunnels.dispatcher = dispatcher
        service.tunnels.access.enabled = config.log.access != "none"
        if plan["resolver"] is not None:  # the dns section changed
            old_resolver, service.resolver = getattr(service, "resolver", None), \
                plan["resolver"]
            service.ctx.resolver = plan["resolver"]
            if old_resolver is not None:
                drains.retire(old_resolver, seconds)
            log.info("reload: dns: the new servers answer from now on")
        stats = getattr(service.tunnels, "stats", None)
        if stats is not None:  # policy.system's switches: the next connections' counters
            stats.switches = config.policy.system
        for what in plan["restart"]:
            log.warn("reload: {what} changed: it takes effect at the next restart (the "
                     "running one stays)", what=what)
        for outbound in old_outbounds:
            if outbound not in dispatcher.outbounds:
                drains.retire(outbound, seconds)

        new_groups: list[list[Any] | None] = [None] * len(config.inbounds)
        leaving: list[tuple[list[Any], InboundConfig]] = []
        for change in plan["changes"]:
            result.inbounds[change.kind] += 1
            if change.kind in (KEEP, USERS, SWAP):
                group = service.inbound_groups[change.old]
                new_groups[change.new] = group
                inbound = config.inbounds[change.new]
                if change.kind == USERS:
                    users = user_set(inbound.protocol, group[0].factory)
                    if users is not None:
                        added, removed = apply_users(
                            users, old.inbounds[change.old].settings.clients,
                            inbound.settings.clients)
                        result.users_added += added
                        result.users_removed += removed
                elif change.kind == SWAP:
                    factory = plan["factories"][change.new]
                    replaced = group[0].factory
                    _inherit(replaced, factory)
                    _keep_api_users(old.inbounds[change.old], replaced, inbound, factory)
                    for svc in group:
                        svc.endpoint.switch.switch(factory)
                        svc.factory = factory
                    if inbound.tag:
                        from vtwist.app.allocate import StaticPorts

                        plan["ctx"].inbounds[inbound.tag] = StaticPorts(factory, inbound.ports)
                    drains.drain(replaced, None)  # its connections go on; closed at stop
            else:
                if change.old is not None:
                    leaving.append((service.inbound_groups[change.old],
                                    old.inbounds[change.old]))
                if change.new is not None:
                    new_groups[change.new] = plan["groups"][change.new]
        # tags no longer configured leave the detour table
        tags = {i.tag for i in config.inbounds if i.tag}
        for tag in list(plan["ctx"].inbounds):
            if tag not in tags:
                del plan["ctx"].inbounds[tag]

        # free the addresses a new listener needs first, start the new ones, then the rest
        wanted = set()
        for change in plan["changes"]:
            if change.kind in (ADD, RESTART):
                wanted |= _addresses(config.inbounds[change.new])
        first = [(g, i) for g, i in leaving if _addresses(i) & wanted]
        later = [(g, i) for g, i in leaving if not _addresses(i) & wanted]
        yield self._leave(first, drains, seconds)
        starting = []
        for change in plan["changes"]:
            if change.kind in (ADD, RESTART):
                for svc in plan["groups"][change.new]:
                    svc.setServiceParent(service)
                    if svc.listening is not None:
                        starting.append(svc.listening)
        if starting:
            yield DeferredList(starting, consumeErrors=True)
        yield self._leave(later, drains, seconds)

        service.config = config
        for inbound in config.inbounds:
            register_stats(service, "inbound", inbound.tag)
        for outbound_config in config.outbounds:
            register_stats(service, "outbound", outbound_config.tag)
        ctx = service.ctx  # the same object for whoever holds it (the API), updated
        ctx.policy, ctx.outbounds = config.policy, plan["ctx"].outbounds
        context = getattr(getattr(service, "operations", None), "context", None)
        if context is not None:
            context.dispatcher = dispatcher
        service.inbound_groups = [g or [] for g in new_groups]
        service.inbound_services = [s for g in service.inbound_groups for s in g]
        self._reopen_logs(config.log)
        return result

    def _leave(self, groups: list[tuple[list[Any], InboundConfig]], drains: Drains,
               seconds: float) -> Deferred[Any]:
        return DeferredList([drain_group(self.service, group, seconds)
                             for group, _ in groups], consumeErrors=True)


def drain_group(service: Any, group: Sequence[Any], seconds: float) -> Deferred[Any]:
    """Stop an inbound's listeners (RemoveInbound, a reload) and let its connections drain
    for ``seconds`` (then they close; at the service's stop at the latest)."""
    drains = _drains(service)
    stopping, factories = [], []
    for svc in group:
        stopping.append(_detach(svc))
        factory = getattr(svc, "factory", None)
        if factory is not None and factory not in factories:
            factories.append(factory)
    for factory in factories:
        drains.drain(factory, seconds)
    return DeferredList(stopping, consumeErrors=True)


def retire_outbound(service: Any, outbound: Any, seconds: float) -> None:
    """An outbound taken out of routing: closed after ``seconds`` (or at stop)."""
    _drains(service).retire(outbound, seconds)


def register_stats(service: Any, kind: str, tag: str) -> None:
    """Create the counters of a handler that appeared (a reload, the API), as V2Ray does
    when a handler starts (idempotent)."""
    stats = getattr(service.tunnels, "stats", None)
    if stats is not None and tag:
        stats.register_handler(kind, tag)


def install_reload_signal(reloader: Reloader, reactor: Any) -> None:
    """Reload on SIGHUP (the reload runs in the reactor, not in the signal handler)."""
    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(reloader.reload)

    signal.signal(signal.SIGHUP, handler)
