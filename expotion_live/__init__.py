"""Expotion Live: make music live with your face and body.

The package is laid out in the order the data flows (see README and DESIGN.md §1):
capture -> features -> model -> engine -> audio -> osc -> ui, with train/ beside it.
"""
__version__ = "0.1.0"
