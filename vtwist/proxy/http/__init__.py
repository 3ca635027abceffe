"""HTTP proxy protocol: the inbound (CONNECT and forward proxy) and the outbound (CONNECT upstream)."""
