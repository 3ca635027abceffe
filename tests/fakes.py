"""Kept for the modules that still import from here: the doubles live in
:mod:`vtwist.testing.doubles`. Import them from there."""

from vtwist.testing.doubles import HalfCloseTransport, log_lines

__all__ = ["HalfCloseTransport", "log_lines"]
