"""Expotion Live: make music live with your face and body.

The package is laid out in the order the data flows (docs/architecture.md):
capture -> features -> model -> engine -> audio -> osc -> live -> ui, with train/ beside it.
"""
__version__ = "0.1.0"
