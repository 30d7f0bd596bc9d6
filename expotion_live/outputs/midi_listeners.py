"""Who listens to our virtual MIDI port: the count of connections a DAW or a patchbay made to it.

A DAW that connects after the show started missed MIDI Start; the clock (`outputs.midi`) polls
this count and, when it grows, tells every listener where the music is at the next bar.
rtmidi cannot see a port's connections, so each API is asked its own way: JACK through
JACK-Client, the ALSA sequencer through its /proc listing. Other APIs give None (unknown).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

ALSA_CLIENTS = Path("/proc/asound/seq/clients")
ALSA_CLIENT = re.compile(r'^Client +\d+ : "(.*)" ')
ALSA_PORT = re.compile(r'^  Port +\d+ : "(.*)" ')
ALSA_CONNECTING_TO = "    Connecting To: "


def alsa_connections(listing: str, client: str, port: str) -> int:
    """Subscribers of `client`'s output `port` in the kernel's listing of sequencer clients."""
    count, in_client, in_port = 0, False, False
    for line in listing.splitlines():
        if (match := ALSA_CLIENT.match(line)) is not None:
            in_client, in_port = match.group(1) == client, False
        elif (match := ALSA_PORT.match(line)) is not None:
            in_port = in_client and match.group(1) == port
        elif in_port and line.startswith(ALSA_CONNECTING_TO):
            count += len(line[len(ALSA_CONNECTING_TO):].split(","))
    return count


def listener_count(api: str, client: str, port: str) -> tuple[Callable[[], int | None], Callable[[], None]]:
    """(count, close): `count()` -> connections to our output port now, None where this API cannot tell."""
    if api == "UNIX_JACK":
        return _jack_count(client, port)
    if api == "LINUX_ALSA" and ALSA_CLIENTS.exists():
        return (lambda: alsa_connections(ALSA_CLIENTS.read_text(errors="replace"), client, port)), (lambda: None)
    return (lambda: None), (lambda: None)


def _jack_count(client: str, port: str):
    try:
        import jack
    except (ImportError, OSError):          # no JACK-Client, or no libjack
        return (lambda: None), (lambda: None)
    try:
        watcher = jack.Client(f"{client} watcher", no_start_server=True)
    except jack.JackError:                  # the server went away since the port opened
        return (lambda: None), (lambda: None)

    def count() -> int | None:
        # JACK renames a second client of the same name ("Expotion Live-01"): match the port's own name
        ours = watcher.get_ports(f"^{re.escape(client)}(-\\d+)?:{re.escape(port)}$", is_midi=True, is_output=True)
        return sum(len(watcher.get_all_connections(p)) for p in ours) if ours else None

    return count, watcher.close
