"""Settings: defaults, TOML override, flag override, and errors that name the key."""
from pathlib import Path

import pytest

from expotion_live import settings as s
from expotion_live.cli import main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_file_overrides_defaults_and_accepts_ints_for_floats(tmp_path):
    cfg = s.load(write(tmp_path, '[generation]\nprompt = "dark techno"\ncfg = 4\n[osc]\ntargets = ["127.0.0.1:7000"]\n'))
    assert cfg.generation.prompt == "dark techno"
    assert cfg.generation.cfg == 4.0 and isinstance(cfg.generation.cfg, float)
    assert cfg.osc.targets == ("127.0.0.1:7000",)
    assert cfg.audio == s.AudioSettings()  # untouched sections keep their defaults


@pytest.mark.parametrize("text, key", [
    ("[generation]\npromt = 'x'\n", "generation.promt"),
    ("[genration]\nprompt = 'x'\n", "genration"),
    ("[audio]\nblock_size = 'big'\n", "audio.block_size"),
    ("[audio]\nblock_size = 1.5\n", "audio.block_size"),
    ("[engine]\nheadless = 1\n", "engine.headless"),
    ("[osc]\ntargets = '127.0.0.1:9000'\n", "osc.targets"),
    ("generation = 3\n", "generation"),
])
def test_bad_key_or_type_names_the_key(tmp_path, text, key):
    with pytest.raises(s.SettingsError, match=key.replace(".", r"\.")):
        s.load(write(tmp_path, text))


def test_bad_file_is_a_clear_error(tmp_path):
    with pytest.raises(s.SettingsError, match="not valid TOML"):
        s.load(write(tmp_path, "[generation\nprompt = "))
    with pytest.raises(s.SettingsError, match="does not exist"):
        s.load(tmp_path / "nope.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(s.SettingsError, match="not valid TOML"):
        s.load(binary)


def test_flags_override_file_with_the_same_validation(tmp_path):
    cfg = s.load(write(tmp_path, "[generation]\ntemperature = 0.5\n"))
    cfg = s.override(cfg, {"generation.temperature": 0.9, "audio.device": "pulse"})
    assert cfg.generation.temperature == 0.9 and cfg.audio.device == "pulse"
    with pytest.raises(s.SettingsError, match="audio.blocksize"):
        s.override(cfg, {"audio.blocksize": 3})
    with pytest.raises(s.SettingsError, match="audio.block_size"):
        s.override(cfg, {"audio.block_size": "3"})


def test_save_round_trip_is_atomic(tmp_path):
    cfg = s.override(s.Settings(), {"generation.prompt": "slow strings", "osc.targets": ("127.0.0.1:1", "127.0.0.1:2")})
    path = tmp_path / "sub" / "settings.toml"
    s.save(cfg, path)
    assert s.load(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["settings.toml"]  # no temporary left behind


def test_cli_reports_settings_errors_in_one_line(tmp_path, capsys):
    # (doctor runs on it, diagnosing it: tests/test_reliability.py)
    code = main(["--config", str(write(tmp_path, "[audio]\nsample_rat = 1\n")), "run", "--headless"])
    err = capsys.readouterr().err
    assert code == 2
    assert "audio.sample_rat" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
