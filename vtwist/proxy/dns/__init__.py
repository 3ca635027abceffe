"""The ``dns`` outbound: settings (sans Twisted) and the outbound that answers routed DNS
queries from the internal DNS (vtwist.dns)."""
