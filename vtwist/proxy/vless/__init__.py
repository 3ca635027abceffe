"""VLESS (V2Ray 4.34): sans-IO codec, settings, server and outbound."""
