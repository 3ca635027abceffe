"""Application-level services that sit beside :mod:`vtwist.service` (dynamic ports)."""
