"""Where OSC goes: `[MODE@]HOST[:PORT]` strings from the settings file, the command line and the window.

A target names its schema so one performance can feed a DAW (native), a FaceOSC patch
and Wekinator at once: `127.0.0.1:9000`, `faceosc@127.0.0.1` (port 8338 implied),
`wekinator@192.168.1.20:6448`.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

MODES = ("native", "faceosc", "wekinator")
# The ports each ecosystem listens on out of the box (FaceOSC, Wekinator), so a bare host works.
DEFAULT_PORTS = {"native": 9000, "faceosc": 8338, "wekinator": 6448}


class OscTargetError(ValueError):
    """A target string that cannot be used; the message says what a good one looks like."""


@dataclass(frozen=True)
class OscTarget:
    host: str
    port: int
    mode: str = "native"

    def __str__(self) -> str:
        return f"{self.mode}@{self.host}:{self.port}"


def parse_target(text: str, default_mode: str = "native", resolve: bool = True) -> OscTarget:
    """`[MODE@]HOST[:PORT]` -> OscTarget. `localhost` becomes 127.0.0.1 (IPv6 surprises).

    `resolve`: also refuse a host no packet could reach (the settings check the form only)."""
    if default_mode not in MODES:
        raise OscTargetError(f"OSC mode {default_mode!r} is unknown; use one of {', '.join(MODES)}")
    spec = text.strip()
    mode = default_mode
    if "@" in spec:
        mode, _, spec = spec.partition("@")
        if mode not in MODES:
            raise OscTargetError(f"OSC target {text!r}: mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    host, sep, port_text = spec.rpartition(":")
    if not sep:
        host, port_text = spec, str(DEFAULT_PORTS[mode])
    if not host:
        raise OscTargetError(f"OSC target {text!r} has no host; expected HOST:PORT like 127.0.0.1:9000")
    try:
        port = int(port_text)
    except ValueError:
        raise OscTargetError(f"OSC target {text!r}: port {port_text!r} is not a number; "
                             f"expected HOST:PORT like 127.0.0.1:9000") from None
    if not 1 <= port <= 65535:
        raise OscTargetError(f"OSC target {text!r}: port {port} is outside 1-65535")
    if host == "localhost":
        host = "127.0.0.1"
    if resolve:
        _check_host(text, host)
    return OscTarget(host, port, mode)


def _check_host(text: str, host: str) -> None:
    """Refuse a host no packet could reach: a malformed address (300.1.1.1) or a name that does not resolve."""
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise OscTargetError(f"OSC target {text!r}: {host} is not an IPv4 address "
                                 f"(four numbers 0-255, like 192.168.1.20)") from None
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        raise OscTargetError(f"OSC target {text!r}: host {host!r} cannot be resolved; "
                             f"check the name or use its IP address") from None


def parse_targets(texts, default_mode: str = "native", resolve: bool = True) -> tuple[OscTarget, ...]:
    """Parse every target (blank entries skipped), failing on the first bad one."""
    return tuple(parse_target(t, default_mode, resolve) for t in texts if t.strip())
