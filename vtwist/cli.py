"""``vtwist`` / ``python -m vtwist``: run, check, share links, set-up helpers.

Exit status: 0 on success; 1 when a config is invalid or ``run`` fails; 2 for a bad
command line, a malformed link or subscription (one line naming the field, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from vtwist.share.errors import LinkError
from vtwist.transport import registry

EXIT_USAGE = 2
#: what ``--loglevel`` takes (V2Ray's ``log.loglevel`` values)
LOGLEVELS = ("debug", "info", "warning", "error", "none")


class CLIError(Exception):
    """A user error: print the message and exit with ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CLIError(f"cannot read {path}: not UTF-8 text (byte {e.start})") from None


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _link_arg(value: str) -> str:
    return sys.stdin.read().strip() if value == "-" else value


def _load_config(path: str, status: int = 1) -> dict[str, Any]:
    from vtwist import runner
    from vtwist.config.errors import ConfigError

    try:
        return runner.load_config_file(path)
    except ConfigError as e:
        raise CLIError(f"config error: {e}", status) from None


def _dump(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_or_print(text: str, path: str | None, out: TextIO) -> None:
    if path is None or path == "-":
        out.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror}") from None


# -- commands ------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Run a config, a link or a subscription entry until stopped."""
    from vtwist import runner

    config = _config_for_run(args)
    if args.workers != "1":  # --workers N: a supervisor and N processes sharing the ports
        from vtwist.app import workers

        try:
            count = workers.parse_workers(args.workers)
        except ValueError as e:
            raise CLIError(str(e)) from None
        if count > 1:
            return workers.supervise(config, count, lambda: _config_for_run(args),
                                     args.pidfile, args.assets)
    # SIGHUP / vtwist reload: the same source read again
    return runner.run_config(config, lambda: _config_for_run(args), args.pidfile)


def cmd_reload(args: argparse.Namespace, out: TextIO) -> int:
    """Signal (SIGHUP) the process whose id is in the pid file: it re-reads its config."""
    import os
    import signal

    try:
        with open(args.pidfile, encoding="ascii") as f:
            pid = int(f.read().strip())
    except OSError as e:
        raise CLIError(f"cannot read {args.pidfile}: {e.strerror}", 1) from None
    except ValueError:
        raise CLIError(f"{args.pidfile} holds no process id", 1) from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        raise CLIError(f"cannot signal process {pid}: {e.strerror}", 1) from None
    out.write(f"sent SIGHUP to {pid}: it reloads its config (see its log for the result)\n")
    return 0


def _config_for_run(args: argparse.Namespace) -> dict[str, Any]:
    from vtwist import genconfig, runner

    sources = [k for k in ("config", "link", "subscription") if getattr(args, k)]
    if len(sources) > 1:
        raise CLIError("use only one of --config, --link, --subscription")
    if args.pick is not None and not args.subscription:
        raise CLIError("--pick goes with --subscription")
    if args.socks is not None and not (args.link or args.subscription):
        raise CLIError("--socks goes with --link or --subscription (a config names its inbounds)")
    if args.mux is not None and not (args.link or args.subscription):
        raise CLIError("--mux goes with --link or --subscription (a config sets its own mux)")
    socks = args.socks or "127.0.0.1:1080"
    if args.config:
        config = _load_config(args.config)
    elif args.link:
        config = genconfig.client_config_from_link(_link_arg(args.link), socks, args.mux)
    elif args.subscription:
        config = genconfig.client_config_from_subscription(
            _read_text(args.subscription), args.pick, socks, warn=_warn, mux=args.mux)
    else:
        config = runner.default_config()
    return with_loglevel(config, "debug" if args.verbose else args.loglevel)


def with_loglevel(config: dict[str, Any], level: str | None) -> dict[str, Any]:
    """``config`` with ``log.loglevel`` set to ``level`` (unchanged when None)."""
    if level is None:
        return config
    log = config.get("log")
    return {**config, "log": {**(log if isinstance(log, dict) else {}), "loglevel": level}}


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Validate a config file like ``v2ray -test``."""
    from vtwist import runner

    if (args.file is None) == (args.config_file is None):
        raise CLIError("check takes one config file: FILE or --config FILE")
    return runner.check_config(_load_config(args.file or args.config_file))


def cmd_uuid(args: argparse.Namespace, out: TextIO) -> int:
    """Print a fresh random UUID."""
    out.write(f"{uuid.uuid4()}\n")
    return 0


def cmd_link_decode(args: argparse.Namespace, out: TextIO) -> int:
    """Print a link's fields and the outbound it stands for (only one with --fields or
    --outbound)."""
    from vtwist.share.schemes import parse_link

    link = parse_link(_link_arg(args.link))
    if args.fields:
        _dump(link.to_json(), out)
    elif args.outbound:
        _dump(link.to_outbound(), out)
    else:
        _dump({"fields": link.to_json(), "outbound": link.to_outbound()}, out)
    for note in link.ignored():
        _warn(note)
    return 0


def cmd_link_encode(args: argparse.Namespace, out: TextIO) -> int:
    """Print the link of a config's vmess, vless, trojan or shadowsocks outbound; for a
    server config (no such outbound, or ``--inbound``), the link that points at the server."""
    from vtwist.share.outbound import (
        find_outbound,
        find_server_inbound,
        inbound_to_outbound,
        outbound_to_link,
    )

    config = _load_config(args.config, EXIT_USAGE)
    inbound = None
    if args.outbound is None:
        inbound = find_server_inbound(config, args.inbound)
        if args.inbound is not None and inbound is None:
            raise CLIError(f"no vmess, vless, trojan or shadowsocks inbound tagged "
                           f"{args.inbound!r}")
        if args.inbound is None and inbound is not None and _has_linked_outbound(config):
            inbound = None  # a client config: its outbound is the link
    if inbound is not None:
        address = args.address or _dial_address(inbound)
        outbound = inbound_to_outbound(inbound, address, warn=_warn)
    else:
        outbound = find_outbound(config, args.outbound)
    link = outbound_to_link(outbound, warn=_warn)
    out.write((link.to_url() if args.url else link.to_link()) + "\n")
    return 0


def _has_linked_outbound(config: dict[str, Any]) -> bool:
    from vtwist.share import schemes

    outbounds = config.get("outbounds")
    return isinstance(outbounds, list) and any(
        isinstance(o, dict) and schemes.for_protocol(str(o.get("protocol", ""))) is not None
        for o in outbounds)


def _dial_address(inbound: dict[str, Any]) -> str:
    """Where clients dial a server inbound: its ``listen``, or this machine (with a note)."""
    listen = str(inbound.get("listen") or "0.0.0.0")
    if listen not in ("0.0.0.0", "::", ""):
        return listen
    print("note: the server listens on every interface; the link points at 127.0.0.1 "
          "(use --address to put the address clients should dial in it)", file=sys.stderr)
    return "127.0.0.1"


def cmd_link_qr(args: argparse.Namespace, out: TextIO) -> int:
    """Draw a link as a QR code in the terminal, or write it as a PNG."""
    from vtwist.share.qr import png_bytes, qr_matrix, render_terminal
    from vtwist.share.schemes import parse_link

    text = _link_arg(args.link).strip()
    parse_link(text).canonical()  # refuse to draw a link that would not work
    try:
        matrix = qr_matrix(text)
    except RuntimeError as e:
        raise CLIError(str(e), 1) from None
    if args.png:
        try:
            with open(args.png, "wb") as f:
                f.write(png_bytes(matrix, args.scale))
        except OSError as e:
            raise CLIError(f"cannot write {args.png}: {e.strerror}") from None
        print(f"wrote {args.png} ({len(matrix)}x{len(matrix)} modules)", file=sys.stderr)
    else:
        out.write(render_terminal(matrix, dark_background=not args.light))
    return 0


def cmd_config_from_link(args: argparse.Namespace, out: TextIO) -> int:
    """Print a complete client config for a link."""
    from vtwist.genconfig import client_config_from_link

    config = client_config_from_link(_link_arg(args.link), args.socks, args.mux)
    _write_or_print(json.dumps(config, indent=2, ensure_ascii=False) + "\n", args.output, out)
    return 0


def cmd_config_server(args: argparse.Namespace, out: TextIO) -> int:
    """Print a server config with a fresh UUID (stdout, or ``-o FILE``), and the link
    pointing at it (stderr; stdout with ``-o``)."""
    from vtwist.genconfig import ServerSpec, server_config

    if bool(args.cert) != bool(args.key):
        raise CLIError("--cert and --key go together")
    if args.cert and not args.tls:
        args.tls = True
    spec = ServerSpec(
        transport=args.transport, header=args.header, tls=args.tls, port=args.port,
        listen=args.listen, address=args.address, user_id=args.id, security=args.security,
        path=args.path, host=args.host, seed=args.seed, sni=args.sni, alpn=args.alpn,
        cert_file=args.cert, key_file=args.key, name=args.name,
    )
    config, link = server_config(spec)
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    encoded = link.to_url() if args.url else link.to_link()
    if args.output and args.output != "-":
        _write_or_print(text, args.output, out)
        print(f"wrote {args.output}", file=sys.stderr)
        out.write(encoded + "\n")
    else:  # the config alone on stdout (> server.json stays valid JSON), the link apart
        out.write(text)
        print(f"link: {encoded}", file=sys.stderr)
    if link.allow_insecure:
        print("note: the certificate is self-signed, so the link sets allowInsecure; "
              "use --cert/--key with a real certificate for verified TLS", file=sys.stderr)
    if args.listen in ("0.0.0.0", "::", ""):
        print(f"note: the server listens on {args.listen or '0.0.0.0'} (every interface): "
              "other machines can reach it; --listen 127.0.0.1 keeps it on this one",
              file=sys.stderr)
    if args.address in ("127.0.0.1", "::1", "localhost"):
        print("note: the link points at this machine; use --address to put the address "
              "clients should dial in it", file=sys.stderr)
    return 0


# -- parser ----------------------------------------------------------------------------
class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows each option's default in ``--help`` (unless it has none, or says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default not in (None, False, "", argparse.SUPPRESS) and action.option_strings
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


def _header_help() -> str:
    """``tcp: none|http; kcp: none|srtp|...`` from the network registry."""
    parts = []
    for name in registry.link_names():
        fields = registry.lookup(name).link_fields  # type: ignore[union-attr]
        if fields.header_types:
            parts.append(f"{name}: {'|'.join(fields.header_types)}")
    return "; ".join(parts)


#: ``--mux [N]``: Mux.Cool on a vmess/vless link's outbound, N sessions per connection
_MUX_OPTION: dict[str, Any] = {
    "nargs": "?", "const": 8, "type": _positive, "metavar": "N",
    "help": "vmess/vless: share connections with Mux.Cool, N sessions per connection "
            "(1-1024; 8 when N is left out; default: no mux)"}


def _with_defaults(add_parser: Any) -> Any:
    """``add_parser`` whose parsers show option defaults in ``--help``."""
    def add(*args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        return add_parser(*args, **kwargs)

    return add


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every command."""
    parser = argparse.ArgumentParser(
        prog="vtwist", description="V2Ray-compatible proxy on Twisted: run configs, use "
        "vmess://, vless://, trojan:// and ss:// links and subscriptions, make configs.")
    from vtwist import __version__

    parser.add_argument("--version", action="version", version=f"vtwist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser = _with_defaults(sub.add_parser)  # type: ignore[method-assign]

    p = sub.add_parser("run", help="run a config, a link or a subscription entry",
                       description="Run until interrupted. Without a source: the default "
                       "config (SOCKS5 on 127.0.0.1:1080, direct).")
    p.add_argument("--config", "-c", metavar="FILE", help="a V2Ray JSON config")
    p.add_argument("--link", "-l", metavar="LINK", help="a vmess://, vless://, trojan:// or "
                   "ss:// link as the outbound "
                   "(- reads it from stdin)")
    p.add_argument("--subscription", metavar="FILE", help="a subscription file (- for stdin)")
    p.add_argument("--pick", metavar="NAME", help="with --subscription: the link named NAME "
                   "(or its 1-based number); default the first")
    p.add_argument("--socks", metavar="HOST:PORT", help="with --link/--subscription: the "
                   "SOCKS5 inbound address (default 127.0.0.1:1080)")
    p.add_argument("--loglevel", choices=LOGLEVELS, help="override the config's "
                   "log.loglevel (generated configs use info)")
    p.add_argument("--assets", metavar="DIR", help="look for geoip.dat, geosite.dat and ext: "
                   "files in DIR first (then V2RAY_LOCATION_ASSET, /usr/local/share/v2ray, "
                   "/usr/share/v2ray)")
    p.add_argument("--mux", **_MUX_OPTION)
    p.add_argument("--verbose", "-v", action="store_true", help="the same as --loglevel debug")
    p.add_argument("--pidfile", metavar="FILE", help="write the process id here (for "
                   "vtwist reload; SIGHUP reloads the config)")
    p.add_argument("--workers", metavar="N", default="1", help="run N processes that share "
                   "the listening ports (SO_REUSEPORT) under one supervisor; auto = the CPU "
                   "count")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reload", help="make a running vtwist re-read its config (SIGHUP)",
                       description="Unchanged inbounds keep their sockets and connections; "
                       "a config that does not parse changes nothing.")
    p.add_argument("--pidfile", metavar="FILE", default="twistd.pid",
                   help="the pid file of the process (twistd --pidfile, run --pidfile)")
    p.set_defaults(func=cmd_reload)


    p = sub.add_parser("check", help="validate a config file (like v2ray -test)")
    p.add_argument("file", metavar="FILE", nargs="?")
    p.add_argument("--config", "-c", metavar="FILE", dest="config_file",
                   help="the config file, as `run` takes it (or give it as FILE)")
    p.add_argument("--assets", metavar="DIR", help="look for geo data files in DIR first")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("uuid", help="print a fresh UUID")
    p.set_defaults(func=cmd_uuid)

    link = sub.add_parser("link", help="decode, encode and draw share links (vmess://, "
                          "vless://, trojan://, ss://)")
    lsub = link.add_subparsers(dest="link_command", metavar="ACTION", required=True)
    lsub.add_parser = _with_defaults(lsub.add_parser)  # type: ignore[method-assign]
    p = lsub.add_parser("decode", help="print the outbound config a link stands for")
    p.add_argument("link", metavar="LINK", help="a vmess://, vless://, trojan:// or ss:// link "
                   "(- reads stdin)")
    p.add_argument("--fields", action="store_true", help="print only the link's fields "
                   "(vmess: its v2 JSON)")
    p.add_argument("--outbound", action="store_true", help="print only the outbound")
    p.set_defaults(func=cmd_link_decode)
    p = lsub.add_parser("encode", help="print the link of a config's vmess, vless, trojan "
                        "or shadowsocks outbound, or of a server config's inbound")
    p.add_argument("--config", "-c", metavar="FILE", required=True)
    p.add_argument("--outbound", metavar="TAG", help="the outbound's tag (default: the "
                   "first outbound that has a link)")
    p.add_argument("--inbound", metavar="TAG", help="a server config's inbound: the link "
                   "that points at that server (default, when no outbound has a link: the "
                   "first vmess/vless/trojan/shadowsocks inbound)")
    p.add_argument("--address", metavar="HOST", help="with a server inbound: the address "
                   "clients dial (default: its listen address, or 127.0.0.1 for 0.0.0.0)")
    p.add_argument("--url", action="store_true", help="vmess: emit the URL form "
                   "vmess://uuid@host:port?... instead of base64 (the other schemes have "
                   "only their URL form)")
    p.set_defaults(func=cmd_link_encode)
    p = lsub.add_parser("qr", help="draw a link as a QR code (terminal or --png)")
    p.add_argument("link", metavar="LINK")
    p.add_argument("--png", metavar="FILE", help="write a PNG instead of drawing")
    p.add_argument("--scale", type=_positive, default=8, help="PNG pixels per module (default 8)")
    p.add_argument("--light", action="store_true", help="draw for a light terminal background")
    p.set_defaults(func=cmd_link_qr)

    cfg = sub.add_parser("config", help="make configs: a client from a link, or a server")
    csub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    csub.add_parser = _with_defaults(csub.add_parser)  # type: ignore[method-assign]
    p = csub.add_parser("from-link", help="a complete client config for a link")
    p.add_argument("link", metavar="LINK")
    p.add_argument("--socks", metavar="HOST:PORT", default="127.0.0.1:1080",
                   help="the SOCKS5 inbound's address")
    p.add_argument("--output", "-o", metavar="FILE")
    p.add_argument("--mux", **_MUX_OPTION)
    p.set_defaults(func=cmd_config_from_link)
    p = csub.add_parser("server", help="a VMess server config with a fresh UUID, and its link")
    p.add_argument("--transport", choices=registry.link_names(), default="tcp",
                   help="the network clients reach the server over")
    p.add_argument("--header", default="none", help=_header_help())
    p.add_argument("--tls", action="store_true", help="TLS (self-signed unless --cert/--key)")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM); implies --tls")
    p.add_argument("--key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--sni", default="", help="server name for the link and certificate")
    p.add_argument("--alpn", default="", help="comma-separated ALPN list")
    p.add_argument("--port", type=int, default=10086, help="the port the server listens on")
    p.add_argument("--listen", default="0.0.0.0", help="address the server listens on; "
                   "0.0.0.0 is every interface, so the server is public (reachable from "
                   "other machines): use 127.0.0.1 to try it locally")
    p.add_argument("--address", default="127.0.0.1", help="address the link tells clients "
                   "to dial")
    p.add_argument("--id", metavar="UUID", help="user id (default: a fresh one)")
    p.add_argument("--security", default="auto", help="VMess security: auto, aes-128-gcm, "
                   "chacha20-poly1305, none, zero")
    p.add_argument("--path", default="", help="ws: the path (default: random); tcp http: "
                   "request paths")
    p.add_argument("--host", default="", help="ws/tcp http: the Host header")
    p.add_argument("--seed", default="", help="kcp: the obfuscation seed")
    p.add_argument("--name", default="", help="the link's name (ps)")
    p.add_argument("--url", action="store_true", help="print the URL form of the link")
    p.add_argument("--output", "-o", metavar="FILE", help="write the config to FILE and "
                   "print only the link (without it: the config on stdout, the link on "
                   "stderr)")
    p.set_defaults(func=cmd_config_server)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point; returns the exit status (also the console script ``vtwist``)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    if getattr(args, "assets", None):
        from vtwist.routing.geodata.assets import add_asset_dir

        add_asset_dir(args.assets)
    try:
        return args.func(args, out)
    except (LinkError, CLIError) as e:
        print(f"vtwist: {e}", file=sys.stderr)
        return getattr(e, "status", EXIT_USAGE)
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
