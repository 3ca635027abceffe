"""Fuzz targets for every sans-IO codec (:mod:`tests.fuzz.targets`) and the long-run driver
(``python -m tests.fuzz TARGET --minutes N``)."""
