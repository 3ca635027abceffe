"""Share links and subscriptions.

- :mod:`vtwist.share.schemes`: the scheme registry (``vmess``, ``vless``, ``trojan``, ``ss``)
  and the parser that dispatches through it;
- one module per scheme: :mod:`vtwist.share.link` (+ :mod:`vtwist.share.vmess_outbound`) for
  ``vmess://``, :mod:`vtwist.share.vless`, :mod:`vtwist.share.trojan`,
  :mod:`vtwist.share.shadowsocks`;
- :mod:`vtwist.share.stream`: a link's transport fields <-> ``streamSettings`` and the
  query-string form; :mod:`vtwist.share.url`: the URL shape the query-string links share;
- :mod:`vtwist.share.outbound`: outbound JSON <-> link, and finding the outbound in a config;
- :mod:`vtwist.share.subscription`: subscription bodies (base64 lists of links);
- :mod:`vtwist.share.qr`: QR codes for links;
- :mod:`vtwist.share.errors` and :mod:`vtwist.share.fields`: errors and field readers.

What a link's ``type``/``host``/``path`` mean per network comes from the network registry
(:mod:`vtwist.transport.registry`, :mod:`vtwist.transport.linkfields`).
"""
