"""The ``dokodemo-door`` inbound: a fixed-destination forwarder (TCP and UDP), and with
``followRedirect`` a transparent proxy (iptables REDIRECT / TPROXY on Linux).

:mod:`.settings` parses the JSON (no Twisted); :mod:`.server` is the TCP side,
:mod:`.udp` the UDP flows, :mod:`.redirect` the Linux socket options.
"""
