"""Test and benchmark helpers for vtwist (impairment relay, simulated links)."""
