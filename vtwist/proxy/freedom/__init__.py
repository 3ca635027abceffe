"""The ``freedom`` outbound: settings (sans Twisted) and the outbound itself."""
