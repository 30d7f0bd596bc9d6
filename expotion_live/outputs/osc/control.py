"""OSC in: a control port so a phone, a DAW or a show controller can drive the app.

One server thread (`osc-control`) receives datagrams and calls the `Controls` methods
(`live.controller.LiveController`) in arrival order; where that leads, see the thread map
in `live/session.py`.
Anything malformed, unknown, too long, too frequent, unauthenticated or failing is logged
(a few lines, however many packets), counted and dropped: a stray packet on the network
must never stop a performance. On an address other than loopback every message must
carry the shared secret as its first argument (docs/osc.md).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import struct
import threading
import time
from collections import Counter
from typing import Protocol

from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from ...settings import RANGES

log = logging.getLogger(__name__)


class Controls(Protocol):
    """What the control port can ask for; the app (window or headless) implements it."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def set_prompt(self, prompt: str) -> None: ...
    def set_guidance(self, cfg: float) -> None: ...
    def set_temperature(self, temperature: float) -> None: ...
    def calibrate(self) -> None: ...
    def load_preset(self, name: str) -> None: ...


MAX_PROMPT_CHARS = 400     # a text prompt's length: T5 encodes longer ones at a cost the next chunk pays
MAX_NAME_CHARS = 64        # a preset's name

# address -> (Controls method, argument types, allowed range: a float argument's (the setting's own, which
# the window's widgets use too) or a string argument's length)
COMMANDS: dict[str, tuple[str, tuple[type, ...], tuple[float, float] | None]] = {
    "/expotion/start": ("start", (), None),
    "/expotion/stop": ("stop", (), None),
    "/expotion/prompt": ("set_prompt", (str,), (1, MAX_PROMPT_CHARS)),
    "/expotion/guidance": ("set_guidance", (float,), RANGES["generation.cfg"]),
    "/expotion/temperature": ("set_temperature", (float,), RANGES["generation.temperature"]),
    "/expotion/calibrate": ("calibrate", (), None),
    "/expotion/preset": ("load_preset", (str,), (1, MAX_NAME_CHARS)),
}


MAX_PACKET_BYTES = 8192    # the largest control packet read whole: prompts are short
RATE_PER_SECOND = 20.0     # messages one sender may send to one address, on average...
RATE_BURST = 20            # ...and at once: more than a fader's moves, far fewer than a flood
MAX_SENDERS = 1024         # (sender, address) pairs whose rate is tracked
OSC_TYPE_TAGS = set("ihfdsbrmtTFN[]")   # what python-osc parses; it logs (not raises) on any other


class ControlError(RuntimeError):
    """The control port could not be opened; the message says what to change."""


def check_args(address: str, args: tuple) -> tuple | str:
    """The arguments converted for the command, or a reason string why they are not acceptable."""
    _, types, bounds = COMMANDS[address]
    if len(args) != len(types):
        return f"expects {len(types)} argument(s) {[t.__name__ for t in types]}, got {list(args)!r}"
    converted = []
    for value, kind in zip(args, types):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)            # senders often type 3 for 3.0
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"expects {kind.__name__}, got {type(value).__name__} {value!r}"
        if kind is float:
            low, high = bounds
            if not (math.isfinite(value) and low <= value <= high):
                return f"value {value!r} outside {low}-{high}"
        if kind is str and not value.strip():
            return "expects a non-empty string"
        if kind is str and len(value) > bounds[1]:
            return f"string of {len(value)} characters, at most {bounds[1]:g}"
        converted.append(value)
    return tuple(converted)


def is_loopback(host: str) -> bool:
    """Whether binding `host` lets only this machine in."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:        # a host name: it may name any interface
        return False


def unparsed_part(data: bytes) -> str:
    """What in an OSC datagram python-osc would skip with a warning of its own ("" if nothing).

    Found here first, so such packets are counted and logged like every other bad packet.
    """
    if data.startswith(b"#bundle\0"):
        index = 16                          # "#bundle\0" and the time tag
        while index + 4 <= len(data):
            (size,) = struct.unpack(">i", data[index:index + 4])
            content = data[index + 4:index + 4 + max(size, 0)]
            index += 4 + max(size, 0)
            if not (content.startswith(b"/") or content.startswith(b"#bundle\0")):
                return f"a bundle element of {len(content)} bytes that is neither a message nor a bundle"
            if reason := unparsed_part(content):
                return reason
        return ""
    end = data.find(b"\0")
    tags_at = (end // 4 + 1) * 4            # the address is padded to a multiple of 4 bytes
    if end < 0 or data[tags_at:tags_at + 1] != b",":
        return ""
    tags = data[tags_at + 1:data.find(b"\0", tags_at)].decode("ascii", errors="replace")
    unknown = sorted(set(tags) - OSC_TYPE_TAGS)
    return f"unsupported OSC type tag(s) {''.join(unknown)!r}" if unknown else ""


class _ControlDispatcher(Dispatcher):
    """Routes whole packets to the ControlServer so parse errors are counted, not swallowed."""

    def __init__(self, server: "ControlServer"):
        super().__init__()
        self._control = server

    def call_handlers_for_packet(self, data: bytes, client_address) -> list:
        self._control.handle_packet(data, client_address)
        return []


class _ControlUDPServer(BlockingOSCUDPServer):
    """python-osc drops datagrams that do not look like OSC before dispatching; we want to count them.

    Reads one byte more than a packet may hold, so a longer datagram (cut to the read
    size by the kernel) is told apart from one that is merely malformed.
    """

    max_packet_size = MAX_PACKET_BYTES + 1

    def verify_request(self, request, client_address) -> bool:
        return True


class ControlServer:
    """Listens on `host:port` (port 0 = any free port, see `.port`) and drives `controls`.

    `secret`: required as every message's first argument; needed (non-empty) when `host`
    is not loopback, since then anyone on the network could reach the show.
    """

    def __init__(self, controls: Controls, port: int, host: str = "127.0.0.1", secret: str = ""):
        if not secret and not is_loopback(host):
            raise ControlError(f"control_host {host} lets other machines control the show: set [osc] "
                               f"control_secret (each message then starts with it, docs/osc.md), or bind 127.0.0.1")
        self._controls = controls
        self._secret = secret.encode()
        self.counts: Counter[str] = Counter()   # handled / malformed / too_large / unknown / unauthenticated /
                                                # rate_limited / failed
        self._lock = threading.Lock()             # counts are read from other threads
        self._allowance: dict[tuple[str, str], tuple[float, float]] = {}   # (sender, address) -> (tokens, time)
        try:
            self._server = _ControlUDPServer((host, port), _ControlDispatcher(self))
        except OSError as err:
            raise ControlError(f"cannot listen for OSC control on {host}:{port} ({err.strerror}); "
                               f"choose another [osc] control_port, or 0 to turn control off") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="osc-control", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "ControlServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, wait for the thread, close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def handle_packet(self, data: bytes, client_address=None) -> None:
        """Parse one datagram (message or bundle) and run each command in it."""
        if len(data) > MAX_PACKET_BYTES:
            self._reject("too_large", f"packet of more than {MAX_PACKET_BYTES} bytes from {client_address}")
            return
        try:
            if unparsed := unparsed_part(data):
                raise ValueError(unparsed)
            packet = osc_packet.OscPacket(data)
        except Exception as err:   # ParseError, and the UnicodeDecodeError of a string that is not UTF-8
            self._reject("malformed", f"unparseable packet of {len(data)} bytes from {client_address}: "
                                      f"{type(err).__name__}: {err}")
            return
        sender = client_address[0] if client_address else ""
        for timed in packet.messages:
            self._handle_message(timed.message.address, tuple(timed.message.params), sender)

    def _handle_message(self, address: str, args: tuple, sender: str = "") -> None:
        if self._secret:
            given = args[0] if args and isinstance(args[0], str) else ""
            if not hmac.compare_digest(given.encode(), self._secret):
                self._reject("unauthenticated", f"{address} from {sender} without the control secret")
                return
            args = args[1:]
        if not self._allowed(sender, address):
            self._reject("rate_limited", f"{address} from {sender}: more than {RATE_PER_SECOND:g} a second")
            return
        if address not in COMMANDS:
            self._reject("unknown", f"unknown address {address}; known: {', '.join(COMMANDS)}")
            return
        checked = check_args(address, args)
        if isinstance(checked, str):
            self._reject("malformed", f"{address} {checked}")
            return
        method = getattr(self._controls, COMMANDS[address][0])
        try:
            method(*checked)
        except Exception as err:   # the app refused (e.g. unknown preset): log it, keep serving
            self._reject("failed", f"{address} {list(checked)!r} failed: {err}")
            return
        self._count("handled")

    def _allowed(self, sender: str, address: str) -> bool:
        """A token bucket per sender and address: RATE_BURST at once, RATE_PER_SECOND on average."""
        now = time.monotonic()
        if len(self._allowance) > MAX_SENDERS:      # a flood from many (forged) senders: start afresh
            self._allowance.clear()
        tokens, then = self._allowance.get((sender, address), (RATE_BURST, now))
        tokens = min(RATE_BURST, tokens + (now - then) * RATE_PER_SECOND)
        if tokens < 1:
            self._allowance[(sender, address)] = (tokens, now)
            return False
        self._allowance[(sender, address)] = (tokens - 1, now)
        return True

    def _count(self, kind: str) -> int:
        with self._lock:
            self.counts[kind] += 1
            return self.counts[kind]

    def _reject(self, kind: str, reason: str) -> None:
        n = self._count(kind)
        if n <= 10 or n % 100 == 0:     # a flood of junk must not flood the log
            log.warning("OSC control: ignored (%s #%d): %s", kind, n, reason)
