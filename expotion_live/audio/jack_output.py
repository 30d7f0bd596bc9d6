"""Output to JACK ports by name ([audio] api = "jack"), through the JACK-Client package.

PortAudio's JACK host API connects its client to the physical outputs only; a JACK rig
routes by port name (a mixer's input, a DAW's track, a recorder). This client has one
mono port, `expotion-live:out`, connected to every port in [audio] jack_ports (none
named: the physical playback ports). The server's rate is whatever the rig runs at, so
the music always goes through a `ResampledFeed` (a plain copy when the rates agree), and
JACK's process callback only copies from its ring.
"""
from __future__ import annotations

import os
import threading
import time

from .output import AudioDeviceError
from .resample import ResampledFeed
from .watchdog import ABANDONED

CLIENT_NAME = "expotion-live"


class JackStream:
    """A JACK client playing the player's blocks into `ports` (same interface as AudioStream)."""

    def __init__(self, player, ports: tuple[str, ...], sample_rate: int, block_size: int):
        try:
            import jack
        except (ImportError, OSError) as err:
            raise AudioDeviceError(f"JACK output needs libjack ({err}); install it with: "
                                   f"apt-get install libjack-jackd2-0") from None
        server = os.environ.get("JACK_DEFAULT_SERVER", "default")
        try:
            self._client = jack.Client(CLIENT_NAME, no_start_server=True)
        except jack.JackOpenError:
            raise AudioDeviceError(f"no JACK server {server!r} is running: start jackd (or PipeWire's JACK), "
                                   f"or set [audio] api = \"portaudio\"") from None
        self.player = player
        self.sample_rate = self._client.samplerate
        playback = [p.name for p in self._client.get_ports(is_audio=True, is_input=True)]
        self.ports = tuple(ports) or tuple(p.name for p in self._client.get_ports(
            is_audio=True, is_input=True, is_physical=True))
        missing = [p for p in self.ports if p not in playback]
        if missing or not self.ports:
            self._client.close()
            what = f"no JACK input port {missing[0]!r}" if missing else "no physical JACK playback port"
            raise AudioDeviceError(f"{what} on server {server!r}; have: {', '.join(playback) or 'none'}")
        self._port = self._client.outports.register("out")
        self.device_name = f"JACK {self._port.name} -> {', '.join(self.ports)}"
        period = self._client.blocksize
        self.feed = ResampledFeed(player, block_size, sample_rate, self.sample_rate,
                                  lead_seconds=(2 * period + round(block_size * self.sample_rate / sample_rate))
                                  / self.sample_rate)
        self.latency_seconds = self.feed.lead_seconds + period / self.sample_rate
        self.underflows = 0           # xruns the server reported: a cycle missed its deadline
        self.callbacks = 0
        self.error = ""
        self._attached = True
        self._in_fill = False
        self._client.set_process_callback(self._process)
        self._client.set_shutdown_callback(self._shutdown)
        self._client.set_xrun_callback(self._xrun)

    def _process(self, frames: int) -> None:
        self.callbacks += 1
        out = self._port.get_array()
        self._in_fill = True          # before the check: see `detach`
        if self._attached:
            self.feed.fill(out)
        else:
            out.fill(0.0)
        self._in_fill = False

    def _xrun(self, delay: float) -> None:
        self.underflows += 1

    def _shutdown(self, status, reason: str) -> None:
        self.error = f"the JACK server shut down: {reason}"

    @property
    def dropped_samples(self) -> int:
        return round(self.feed.dropped_samples * self.feed.source_rate / self.sample_rate)

    def start(self) -> None:
        self.feed.start()
        self._client.activate()
        for port in self.ports:
            self._client.connect(self._port, port)

    def detach(self) -> None:
        """Stop consuming the player, without calling the server (it may be gone)."""
        self._attached = False
        while self._in_fill:
            time.sleep(0.001)
        self.feed.stop()

    def abandon(self) -> None:
        """Detach from a server that failed and close the client off this thread: libjack's
        threads of a client left open after its server died crash the process later."""
        self.detach()
        ABANDONED.append(self)
        threading.Thread(target=self._client.close, name="jack-close", daemon=True).start()

    def stop(self) -> None:
        self.detach()
        self._client.deactivate()
        self._client.close()
