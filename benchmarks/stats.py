"""Suite ``stats`` (issue 19): what traffic counting costs. SOCKS5 -> freedom with
``stats`` (every switch on), the API and (vtwist) ``metrics``, beside the same proxy
without them, and V2Ray with its stats and API on."""

from __future__ import annotations

from typing import Any

from benchmarks import configs, metrics
from benchmarks.core import MB, Context, Group
from benchmarks.procs import ProcessGroup, free_port, wait_port
from benchmarks.setups import SocksProxy, impl_argv

SWITCHES = {"statsInboundUplink": True, "statsInboundDownlink": True,
            "statsOutboundUplink": True, "statsOutboundDownlink": True}


def with_stats(config: dict[str, Any], api_port: int, metrics_port: int | None) -> dict[str, Any]:
    """``config`` with counters on everywhere, the API on ``api_port`` and, for vtwist,
    ``metrics`` on ``metrics_port``."""
    config = dict(config)
    config["stats"] = {}
    config["policy"] = {"system": SWITCHES,
                        "levels": {"0": {"statsUserUplink": True, "statsUserDownlink": True}}}
    config["api"] = {"tag": "api", "services": ["StatsService"]}
    config["inbounds"] = [*config["inbounds"], {
        "tag": "api", "listen": "127.0.0.1", "port": api_port, "protocol": "dokodemo-door",
        "settings": {"address": "127.0.0.1"}}]
    config["routing"] = {"rules": [{"type": "field", "inboundTag": ["api"],
                                    "outboundTag": "api"}]}
    if metrics_port is not None:
        config["metrics"] = {"port": metrics_port}
    return config


class CountingSocksProxy(SocksProxy):
    """SOCKS5 -> freedom with stats, the API (and vtwist's metrics) on."""

    def start(self, group: ProcessGroup) -> None:
        """One process on the counting config."""
        self.socks_port = free_port()
        tag = f"socks-{self.tag}".replace("@", "-")
        base = configs.socks_freedom(self.socks_port, str(group.workdir / f"{tag}-access.log"))
        config = with_stats(base, free_port(),
                            free_port() if self.family == "vtwist" else None)
        path = group.write_config(tag, config)
        proc = group.spawn(tag, impl_argv(self.family, path), env=self.env)
        self.procs = [proc]
        wait_port(self.socks_port, proc.popen)


def groups(ctx: Context) -> list[Group]:
    """vtwist counting (the subject) vs vtwist not counting vs V2Ray counting."""
    total = (4 if ctx.quick else 256) * MB
    conns = 50 if ctx.quick else 2000
    return [Group(
        "stats", f"SOCKS5 -> freedom with stats/api/metrics, {total // MB} MB each way",
        [CountingSocksProxy("vtwist", "vtwist@stats"), SocksProxy("vtwist", "vtwist@plain"),
         CountingSocksProxy("v2ray", "v2ray@stats")],
        [metrics.throughput("up", 1, total, ctx.verify),
         metrics.throughput("down", 16, total, ctx.verify),
         metrics.conn_rate(conns)],
        ["counting costs one add per read: vtwist@stats ~ vtwist@plain"])]
