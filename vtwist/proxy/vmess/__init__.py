"""VMess (V2Ray 4.34 wire compatible).

Sans-IO core (no reactor imports): ``ids`` (UUID -> cmdKey, alter IDs), ``kdf`` (nested
HMAC KDF), ``header`` (instruction, AEAD request/response headers), ``legacy`` (MD5/CFB
header, legacy auth table), ``body`` (chunk codecs, masking, padding), ``replay`` (exact
replay filters), ``users`` (accounts, user table), ``handshake`` (server request decoder
and client session).

Twisted side: ``transport`` (the decoded stream as a transport), ``server`` (inbound
protocol/factory), ``client`` (:class:`~vtwist.proxy.vmess.client.VMessClientEndpoint`),
``inbound`` / ``outbound`` (config parsing and builders for the registry).
"""
