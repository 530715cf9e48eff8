"""Fault injection on real local clusters: whatever fails, nothing else is lost.

A package (not a plain folder) so that its helpers.py and conftest.py do not shadow
tests/helpers.py and tests/conftest.py, which test modules everywhere use.
"""
