"""What leaves for other programs: OSC (`osc/`: the feed out, the control port in), MIDI, Ableton Link.

Each is opened and closed by the composition root (`live.controller`); the session imports
none of them. Link's follow and conduct modes reach the music through the one transform a
session declares for them (`live.session.TempoSync`).
"""
