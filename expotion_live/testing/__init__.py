"""Test fixtures: random MusicGen checkpoints and synthetic face and hand videos, made in code.

Inside the package rather than tests/ because bench/, `doctor`'s fix for a missing demo video and
the README's hand-tracking try-out run them from an installed copy; the live app imports none of them.
"""
