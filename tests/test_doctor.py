"""`expotion-live doctor` on this machine: real devices, real ports, real checkpoint folders."""
import json
import shutil
import socket
import subprocess
import sys

import torch

from expotion_live.capture.sources import list_cameras
from expotion_live.cli import main

from conftest import REPO


def doctor_json(capsys, *args) -> tuple[int, dict]:
    code = main(["doctor", "--json", *args])
    report = json.loads(capsys.readouterr().out)
    return code, report


def by_name(report: dict) -> dict:
    return {c["name"]: c for c in report["checks"]}


def test_report_says_what_is_missing_and_how_to_fix_it(tmp_path, capsys):
    code, report = doctor_json(capsys, "--checkpoints", str(tmp_path))
    checks = by_name(report)
    assert code == 0
    assert checks["trackers"]["ok"]
    assert not checks["MusicGen weights"]["ok"]
    assert "expotion-live download small" in checks["MusicGen weights"]["fix"]
    assert checks["demo video"]["ok"]
    assert checks["decode backend"]["ok"] and checks["decode backend"]["detail"].startswith(
        "fused-gpu" if torch.cuda.is_available() else "int8-numba")   # the defaults: auto device and precision
    assert checks["camera"]["ok"] == bool(list_cameras()) or not checks["camera"]["ok"]
    if not checks["camera"]["ok"]:
        assert checks["camera"]["fix"] and not report["show_ready"]


def test_strict_exits_nonzero_exactly_when_a_show_need_is_missing(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "main.py"), "doctor", "--json", "--strict",
                          "--checkpoints", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    report = json.loads(out.stdout)
    needs = [c for c in report["checks"] if c["needed_for_show"]]
    assert report["show_ready"] == all(c["ok"] for c in needs)
    assert out.returncode == (0 if report["show_ready"] else 1)
    assert "Traceback" not in out.stderr


def test_finds_weights_in_the_transformers_layout(tmp_path, capsys, tiny_musicgen_dir):
    shutil.copytree(tiny_musicgen_dir, tmp_path / "musicgen-tiny")
    (tmp_path / "not-a-model").mkdir()
    _, report = doctor_json(capsys, "--checkpoints", str(tmp_path))
    weights = by_name(report)["MusicGen weights"]
    assert weights["ok"] and "musicgen-tiny" in weights["detail"] and "not-a-model" not in weights["detail"]
    # model.dir still points at the default, which holds nothing: doctor says which dir to use
    assert "musicgen-tiny" in by_name(report)["model.dir"]["fix"]


def test_lists_audio_outputs_by_name_with_the_default_marked(capsys, tmp_path, null_sink):
    _, report = doctor_json(capsys, "--checkpoints", str(tmp_path))
    audio = by_name(report)["audio output"]
    assert audio["ok"], audio
    assert "pulse" in audio["detail"] and "(default)" in audio["detail"]


def test_a_taken_control_port_is_a_missing_show_need(tmp_path, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = tmp_path / "show.toml"
        config.write_text(f"[osc]\ncontrol_port = {port}\n")
        code = main(["--config", str(config), "doctor", "--json", "--checkpoints", str(tmp_path)])
        report = json.loads(capsys.readouterr().out)
    port_check = by_name(report)["OSC control port"]
    assert not port_check["ok"] and str(port) in port_check["detail"]
    assert port_check["needed_for_show"] and not report["show_ready"] and code == 0


def test_the_control_port_is_checked_on_the_configured_host(tmp_path, capsys):
    config = tmp_path / "show.toml"      # 192.0.2.1 (TEST-NET-1) is no address of this machine
    config.write_text('[osc]\ncontrol_port = 9100\ncontrol_host = "192.0.2.1"\ncontrol_secret = "s"\n')
    main(["--config", str(config), "doctor", "--json", "--checkpoints", str(tmp_path)])
    port_check = by_name(json.loads(capsys.readouterr().out))["OSC control port"]
    assert not port_check["ok"] and "192.0.2.1:9100" in port_check["detail"]


def test_a_link_mode_outside_the_table_is_a_missing_show_need_naming_the_choices(tmp_path, capsys):
    config = tmp_path / "show.toml"
    config.write_text('[link]\nmode = "lead"\n')
    code = main(["--config", str(config), "doctor", "--json", "--checkpoints", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    settings_file = by_name(report)["settings file"]
    assert not settings_file["ok"] and settings_file["needed_for_show"] and not report["show_ready"] and code == 0
    assert str(config) in settings_file["detail"] and "link.mode = 'lead'" in settings_file["detail"]
    assert "off, follow, conduct" in settings_file["detail"]
