"""Fault injection on real local clusters: whatever fails, nothing else is lost.

A package (not a plain folder) so that its conftest.py does not shadow tests/conftest.py,
which test modules everywhere import as `conftest`.
"""
