"""The README's main command and the headless installation mode, as real processes.

`python main.py` with no display and no sound card records the live path to a file;
a headless run sends tracking over real UDP OSC and obeys the control port.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import soundfile as sf
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from conftest import REPO


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def headless_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(XDG_CONFIG_HOME=str(extra.pop("config_home")), **extra)
    return env


def test_main_command_without_display_or_sound_card_records_the_demo(tmp_path):
    env = headless_env(config_home=tmp_path / "config", PULSE_SERVER="unix:/nonexistent")
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(10)
    proc.send_signal(signal.SIGINT)          # a performer's Ctrl-C: the recording is kept
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no display and no sound card" in err and "SynthSource" in err and "Traceback" not in err
    audio, rate = sf.read(tmp_path / "expotion-live.wav", dtype="float32")
    assert rate == 32000 and len(audio) > rate and abs(audio).max() > 0.01
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left


def test_headless_run_sends_osc_and_obeys_the_control_port(tmp_path, face_video):
    received: list[tuple[str, tuple]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    control_port = free_udp_port()
    config = tmp_path / "show.toml"
    config.write_text(f'[osc]\ntargets = ["127.0.0.1:{server.server_address[1]}"]\ncontrol_port = {control_port}\n')
    out = tmp_path / "show.wav"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--config", str(config), "run", "--headless", "--video",
         str(face_video), "--engine", "synth", "--file-only", "--out", str(out), "--duration", "60"],
        cwd=tmp_path, env=headless_env(config_home=tmp_path / "config"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(a == "/music/playing" and args[0] for a, args in received):
            time.sleep(0.1)
        control = SimpleUDPClient("127.0.0.1", control_port)
        control.send_message("/expotion/prompt", 42)            # malformed: ignored, the show goes on
        control.send_message("/expotion/stop", [])
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        server.shutdown()
    assert proc.returncode == 0, err
    addresses = {a for a, _ in received}
    assert {"/face/found", "/pose/found", "/motion/energy", "/music/playing"} <= addresses
    assert any(a == "/face/found" and args[0] == 1 for a, args in received)   # the demo face is tracked
    played, rate = sf.read(out, dtype="float32")
    assert 0 < len(played) < 30 * rate          # stopped by /expotion/stop, long before --duration


def test_every_benchmark_is_reachable_from_the_command_line(capsys):
    from expotion_live.cli import BENCHMARKS, main

    for name in BENCHMARKS:
        try:
            main(["bench", name, "--help"])
        except SystemExit as done:             # argparse's --help
            assert done.code == 0, name
        assert "--json" in capsys.readouterr().out, name
