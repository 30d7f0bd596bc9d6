"""`expotion-live run --headless`: the installation/CI mode, through its real argument parser."""
import argparse

import numpy as np
import soundfile as sf

from expotion_live.commands import run as run_mod
from expotion_live.settings import Settings


def run(argv):
    parser = argparse.ArgumentParser(prog="expotion-live")
    run_mod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *argv])
    return args.handler(args, Settings())


def test_headless_run_on_face_video_with_tiny_model_writes_the_file(tmp_path, face_video, tiny_musicgen_dir, capsys):
    out, codes_out = tmp_path / "show.wav", tmp_path / "codes.npz"
    code = run(["--headless", "--video", str(face_video), "--out", str(out), "--duration", "2",
                "--codes-out", str(codes_out),
                "--model", str(tiny_musicgen_dir), "--precision", "fp32", "--engine", "musicgen",
                "--prompt", "slow strings", "--file-only"])
    err = capsys.readouterr().err
    assert code == 0, err
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 32000 and len(audio) == 2 * 32000 and abs(audio).max() > 1e-3
    assert "MusicGenSource -> file" in err and "played 2.0 s" in err and "underruns 0" in err
    # Every generated code frame, the video frame at its position and its chunk: at least what was played.
    codes = np.load(codes_out)
    K, n = codes["codes"].shape
    assert K == 4 and n >= 2 * 50 and codes["frame_times"].shape == codes["chunk"].shape == (n,)
    assert codes["chunk"][0] == 0 and np.all(np.diff(codes["chunk"]) >= 0) and codes["chunk"][-1] >= 2
    assert np.all(np.diff(codes["frame_times"]) >= 0)     # later codes meet the same or later video frames


def test_expected_failures_are_one_line_errors(tmp_path, capsys):
    video = tmp_path / "missing.mp4"
    assert run(["--headless", "--video", str(video), "--out", str(tmp_path / "x.wav")]) == 1
    assert run(["--video", str(video)]) == 1
    empty = tmp_path / "model"        # not the folder of --out, which holds its lock file while the run starts
    empty.mkdir()
    assert run(["--headless", "--engine", "musicgen", "--model", str(empty), "--file-only",
                "--out", str(tmp_path / "x.wav")]) == 1
    assert run(["--headless", "--file-only"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"expotion-live run: video file {video} does not exist",
        "expotion-live run: pass --headless (the window is `expotion-live gui`)",
        f"expotion-live run: no MusicGen weights in {empty}: run `expotion-live download small` "
        f"or pass --model DIR (or --engine synth)",
        "expotion-live run: --file-only needs --out WAV",
    ]
    assert not (tmp_path / "x.wav").exists()


def test_unknown_output_device_lists_the_devices(null_sink, tmp_path, face_video, capsys):
    code = run(["--headless", "--video", str(face_video), "--engine", "synth", "--audio-output", "no-such-card",
                "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "no output device matches 'no-such-card'; available:" in err and "pulse" in err


def test_old_audio_device_flag_is_a_clear_error_naming_the_new_one(tmp_path, face_video, capsys):
    """`run --device` is the compute device, as for `generate`; a sound card's name there was meant for --audio-output."""
    assert run(["--headless", "--video", str(face_video), "--engine", "synth", "--device", "pulse"]) == 1
    assert capsys.readouterr().err.strip() == ("expotion-live run: --device is the compute device (auto, cpu, cuda, "
                                               "mps), not 'pulse'; the audio output is --audio-output NAME")


def test_osc_targets_from_the_command_line_get_tracking_and_the_session_status(tmp_path, face_video, capsys):
    from test_osc import Receiver, as_dict

    native, faceosc = Receiver(), Receiver()
    try:
        code = run(["--headless", "--video", str(face_video), "--engine", "synth", "--file-only",
                    "--out", str(tmp_path / "show.wav"), "--duration", "2",
                    "--osc", f"127.0.0.1:{native.port}", "--osc", f"faceosc@127.0.0.1:{faceosc.port}"])
        assert code == 0, capsys.readouterr().err
        bundles = [as_dict(packet) for packet in native.wait_for(10)]
        assert faceosc.wait_for(10) and "/found" in as_dict(faceosc.packets[-1])
    finally:
        native.close()
        faceosc.close()
    # /music/* comes from the SessionStatus the run polls: the synth's tempo and the chunk playing
    playing = [b for b in bundles if b["/music/playing"] == [1.0]]
    assert playing and max(b["/music/tempo"][0] for b in playing) > 0
    assert max(b["/music/chunk"][0] for b in playing) >= 1


def test_accepted_controls_print_rate_limited_lines_and_the_summary_counts_them(tmp_path, face_video, capsys):
    import socket
    import threading
    import time

    from pythonosc.udp_client import SimpleUDPClient

    from expotion_live.settings import override

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def listening() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return True
            return False

    def remote() -> None:            # a phone's fader: 30 prompts in 0.6 s, a guidance, junk, then stop
        deadline = time.monotonic() + 60
        while not listening() and time.monotonic() < deadline:
            time.sleep(0.05)
        client = SimpleUDPClient("127.0.0.1", port)
        for i in range(30):
            client.send_message("/expotion/prompt", f"p{i}")
            time.sleep(0.02)
        client.send_message("/expotion/guidance", 3.0)
        client.send_message("/expotion/volume", 0.5)
        time.sleep(1.5)
        client.send_message("/expotion/stop", [])

    parser = argparse.ArgumentParser(prog="expotion-live")
    run_mod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "--headless", "--video", str(face_video), "--engine", "synth", "--file-only",
                              "--out", str(tmp_path / "show.wav"), "--duration", "60"])
    sender = threading.Thread(target=remote, daemon=True)
    sender.start()
    code = args.handler(args, override(Settings(), {"osc.control_port": port}))
    sender.join(timeout=10)
    err = capsys.readouterr().err.splitlines()
    assert code == 0, err
    prompts = [line for line in err if line.startswith("expotion-live run: control prompt ")]
    assert 1 <= len(prompts) <= 3 and prompts[-1].startswith("expotion-live run: control prompt 'p29'"), prompts
    assert sum(int(line.split("(+")[1].split(" ")[0]) + 1 if "(+" in line else 1 for line in prompts) == 30
    assert "expotion-live run: control guidance 3.0" in err and "expotion-live run: control stop" in err
    counts = err[-1]
    assert counts.startswith("controls 32 accepted; OSC ") and "33 control packets in (1 refused)" in counts, counts
    assert int(counts.split("OSC ")[1].split(" bundles")[0]) > 0
    assert counts.endswith("MIDI off; Ableton Link off")
