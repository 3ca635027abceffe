"""The internal DNS (V2Ray's ``dns`` section) and the one resolver interface of vtwist.

:mod:`.settings` parses the section (no Twisted); :mod:`.cache` holds the TTL cache and the
static hosts; :mod:`.message` is the wire codec (``twisted.names.dns``); :mod:`.transports`
sends queries over UDP, TCP and DoH; :mod:`.resolver` is the internal DNS; :mod:`.system`
the system resolver and the interface both share; :mod:`.endpoint` dials a name through
either.
"""
