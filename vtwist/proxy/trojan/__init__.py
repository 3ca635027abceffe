"""Trojan (V2Ray 4.34): inbound with fallbacks, outbound; TCP and UDP."""
