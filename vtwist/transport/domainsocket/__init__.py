"""Domain-socket transport (``"network": "domainsocket"``, alias ``ds``): a stream over a
UNIX socket, a file path or a Linux abstract name, as V2Ray 4.34 has it."""
