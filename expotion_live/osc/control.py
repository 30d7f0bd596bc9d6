"""OSC in: a control port so a phone, a DAW or a show controller can drive the app.

One server thread (`osc-control`) receives datagrams and calls the `Controls` methods
(`live.controller.LiveController`) in arrival order; where that leads, see the thread map
in `live/session.py`.
Anything malformed, unknown or failing is logged, counted and dropped: a stray packet
on the network must never stop a performance.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from typing import Protocol

from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from ..settings import RANGES

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


# address -> (Controls method, argument types, allowed range for a float argument: the setting's own,
# which the window's widgets use too)
COMMANDS: dict[str, tuple[str, tuple[type, ...], tuple[float, float] | None]] = {
    "/expotion/start": ("start", (), None),
    "/expotion/stop": ("stop", (), None),
    "/expotion/prompt": ("set_prompt", (str,), None),
    "/expotion/guidance": ("set_guidance", (float,), RANGES["generation.cfg"]),
    "/expotion/temperature": ("set_temperature", (float,), RANGES["generation.temperature"]),
    "/expotion/calibrate": ("calibrate", (), None),
    "/expotion/preset": ("load_preset", (str,), None),
}


MAX_PACKET_BYTES = 8192    # the largest control packet read whole: prompts are short


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
        converted.append(value)
    return tuple(converted)


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
    """Listens on `host:port` (port 0 = any free port, see `.port`) and drives `controls`."""

    def __init__(self, controls: Controls, port: int, host: str = "127.0.0.1"):
        self._controls = controls
        self.counts: Counter[str] = Counter()     # handled / malformed / too_large / unknown / failed
        self._lock = threading.Lock()             # counts are read from other threads
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
            packet = osc_packet.OscPacket(data)
        except Exception as err:   # ParseError, and the UnicodeDecodeError of a string that is not UTF-8
            self._reject("malformed", f"unparseable packet of {len(data)} bytes from {client_address}: "
                                      f"{type(err).__name__}: {err}")
            return
        for timed in packet.messages:
            self._handle_message(timed.message.address, tuple(timed.message.params))

    def _handle_message(self, address: str, args: tuple) -> None:
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

    def _count(self, kind: str) -> int:
        with self._lock:
            self.counts[kind] += 1
            return self.counts[kind]

    def _reject(self, kind: str, reason: str) -> None:
        n = self._count(kind)
        if n <= 10 or n % 100 == 0:     # a flood of junk must not flood the log
            log.warning("OSC control: ignored (%s #%d): %s", kind, n, reason)
