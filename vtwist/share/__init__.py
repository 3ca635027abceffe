"""Share links and subscriptions.

- :mod:`vtwist.share.link`: the ``vmess://`` link model and its two textual forms;
- :mod:`vtwist.share.outbound`: outbound JSON -> link, and finding the outbound in a config;
- :mod:`vtwist.share.subscription`: subscription bodies (base64 lists of links);
- :mod:`vtwist.share.qr`: QR codes for links;
- :mod:`vtwist.share.errors` and :mod:`vtwist.share.fields`: errors and field readers.

What a link's ``type``/``host``/``path`` mean per network comes from the network registry
(:mod:`vtwist.transport.registry`, :mod:`vtwist.transport.linkfields`).
"""
