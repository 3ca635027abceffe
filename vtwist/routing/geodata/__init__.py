"""V2Ray's geo data files (``geoip.dat``, ``geosite.dat``, ``ext:`` files), read lazily.

:mod:`.wire` reads the protobuf wire format from a buffer (sans-IO), :mod:`.build` turns one
entry into a compact matcher (sans-IO), and :mod:`.assets` finds the files where V2Ray looks
for them, opens them and keeps each decoded entry once (the only module here that touches
the file system).
"""
