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


@pytest.mark.parametrize("text, key, allowed", [
    ('[link]\nmode = "lead"\n', "link.mode", "off, follow, conduct"),
    ('[model]\ndevice = "tpu"\n', "model.device", "auto, cpu, cuda, mps, cuda:N"),
    ('[model]\ndevice = "cuda:x"\n', "model.device", "auto, cpu, cuda, mps, cuda:N"),
    ('[model]\nprecision = "int3"\n', "model.precision", "auto, fp32, bf16, int8, int4"),
    ('[engine]\nkind = "magenta"\n', "engine.kind", "auto, musicgen, synth"),
    ('[tracking]\nhand_model = "heavy"\n', "tracking.hand_model", "lite, full"),
    ('[osc]\nmode = "ableton"\n', "osc.mode", "native, faceosc, wekinator"),
    ('[audio]\nfilter_expression = "frown"\n', "audio.filter_expression", "mouth_width, mouth_height, smile"),
    ('[audio]\napi = "asio"\n', "audio.api", "portaudio, jack"),
    ('[midi]\napi = "core"\n', "midi.api", "auto, alsa, jack, coremidi, winmm"),
])
def test_a_word_outside_its_choices_exits_2_naming_the_file_the_key_and_the_choices(tmp_path, capsys, text, key,
                                                                                     allowed):
    path = write(tmp_path, text)
    with pytest.raises(s.SettingsError) as err:
        s.load(path)
    assert str(path) in str(err.value) and key in str(err.value) and allowed in str(err.value)
    assert main(["--config", str(path), "run", "--headless"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and str(path) in line and key in line and allowed in line


@pytest.mark.parametrize("target, reason", [
    ("lead@127.0.0.1", "mode 'lead' is unknown; use one of native, faceosc, wekinator"),
    ("127.0.0.1:notaport", "port 'notaport' is not a number"),
    ("127.0.0.1:70000", "port 70000 is outside 1-65535"),
    (":9000", "has no host"),
])
def test_a_bad_osc_target_is_refused_at_load_naming_the_key(tmp_path, capsys, target, reason):
    path = write(tmp_path, f'[osc]\ntargets = ["127.0.0.1:9000", "{target}"]\n')
    with pytest.raises(s.SettingsError, match=rf"^{path}: osc\.targets: .*{reason}"):
        s.load(path)
    assert main(["--config", str(path), "run", "--headless"]) == 2
    assert "osc.targets" in capsys.readouterr().err
    with pytest.raises(s.SettingsError, match=r"osc\.targets"):        # a flag or the window: the same check
        s.override(s.Settings(), {"osc.targets": (target,)})


@pytest.mark.parametrize("text, key, reason", [
    ('[osc]\nableton = "127.0.0.1:notaport"\n', "osc.ableton", "port 'notaport' is not a number"),
    ('[osc]\nableton = "faceosc@"\n', "osc.ableton", "has no host"),
    ('[midi]\nmap = ["smile:200"]\n', "midi.map", "CC must be 0-119"),
    ('[midi]\nmap = ["smile:1", "frown:2"]\n', "midi.map", "expected SIGNAL:CC with SIGNAL one of"),
])
def test_the_ableton_address_and_the_midi_map_are_checked_at_load_naming_the_key(tmp_path, capsys, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(s.SettingsError, match=rf"^{path}: {key}: .*{reason}"):
        s.load(path)
    assert main(["--config", str(path), "run", "--headless"]) == 2
    assert key in capsys.readouterr().err


def test_osc_targets_are_read_with_the_files_own_mode_and_hosts_resolve_when_sending_starts(tmp_path):
    cfg = s.load(write(tmp_path, '[osc]\nmode = "faceosc"\ntargets = ["127.0.0.1", "no-such-host.invalid:9000"]\n'))
    assert cfg.osc.targets == ("127.0.0.1", "no-such-host.invalid:9000")   # the network is asked when sending starts


def test_every_default_is_one_of_its_choices_and_a_device_may_carry_an_index(tmp_path):
    for key in s.CHOICES:
        assert s.is_choice(key, s.value_of(s.Settings(), key)), key
    assert s.load(write(tmp_path, '[model]\ndevice = "cuda:1"\n')).model.device == "cuda:1"
    assert not s.is_choice("model.device", "cpu:1") and not s.is_choice("model.device", "cuda:")


def test_the_components_accept_exactly_the_table(tmp_path):
    """The parts that take these words check them too, when built outside a settings file."""
    from expotion_live.features.landmarkers import HAND_MODELS
    from expotion_live.model.precision import PRECISIONS
    from expotion_live.outputs.ableton_link import MODES as LINK_MODES
    from expotion_live.outputs.midi import APIS
    from expotion_live.outputs.osc.targets import DEFAULT_PORTS

    assert s.CHOICES["model.precision"] == ("auto", *PRECISIONS)
    assert s.CHOICES["tracking.hand_model"] == tuple(HAND_MODELS)
    assert s.CHOICES["link.mode"] == LINK_MODES
    assert s.CHOICES["midi.api"] == tuple(APIS)
    assert s.CHOICES["osc.mode"] == tuple(DEFAULT_PORTS)


@pytest.mark.parametrize("command, flag, key", [("generate", "--precision", "model.precision"),
                                                ("run", "--engine", "engine.kind")])
def test_flags_offer_exactly_the_tables_choices(capsys, command, flag, key):
    from expotion_live.cli import build_parser

    parser = build_parser()
    assert [getattr(parser.parse_args([command, flag, word]), flag[2:]) for word in s.CHOICES[key]] == list(
        s.CHOICES[key])
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([command, flag, "int3"])
    assert exit_.value.code == 2 and ", ".join(map(repr, s.CHOICES[key])) in capsys.readouterr().err
