"""The ``blackhole`` outbound: settings (sans Twisted) and the outbound itself."""
