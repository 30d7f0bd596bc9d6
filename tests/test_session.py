"""The whole live path: face video -> MediaPipe tracking -> tiny MusicGen -> ring -> file sink."""
import time

import numpy as np
import pytest
import soundfile as sf

from expotion_live.capture.sources import open_source
from expotion_live.capture.thread import CaptureThread
from expotion_live.engine.musicgen_source import MusicGenSource
from expotion_live.engine.synth import SynthSource
from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor
from expotion_live.live.session import LiveSession, SessionError
from expotion_live.live.source import build_source
from expotion_live.settings import Settings, override
from test_engine_scheduler import join_jumps

SR = 32000


def live_settings(tmp_path, video, model_dir, **extra):
    return override(Settings(), {
        "camera.source": str(video), "model.dir": str(model_dir), "model.precision": "fp32",
        "engine.kind": "musicgen", "generation.seed": 0, "audio.out": str(tmp_path / "show.wav"), **extra})


def test_headless_session_on_face_video_plays_smoothly_and_records_exactly(tmp_path, face_video, tiny_musicgen_dir):
    settings = live_settings(tmp_path, face_video, tiny_musicgen_dir, **{
        "generation.chunk_seconds": 0.5, "generation.first_chunk_seconds": 0.25})
    source = build_source(settings)
    assert isinstance(source, MusicGenSource)
    chunks_heard = []
    session = LiveSession(settings, source, CaptureThread(open_source(str(face_video), settings.camera)),
                          output="file", duration=3.0)
    session.add_chunk_listener(lambda index, start: chunks_heard.append((index, start)))
    adaptor_dir = save_adaptor(ConditionAdaptor(AdaptorConfig(), source.musicgen.decoder), tmp_path / "adaptor")
    session.start()
    while not chunks_heard:
        time.sleep(0.01)
    session.set_adaptor(str(adaptor_dir))                           # while playing: used from the next chunk
    assert session.wait(timeout=60)
    status = session.status()
    written = session.stop()

    played, sr = sf.read(written, dtype="float32")
    assert sr == SR and len(played) == 3 * SR                        # exactly --duration
    assert status.error == "" and status.time_to_first_sound is not None
    assert source.adaptor is not None and source.steering_words == ()   # the adaptor replaced prompt steering
    assert status.tracking_fps > 5 and status.dsp_latency is not None and status.dsp_latency < 0.1
    assert status.chunk_index >= 1 and chunks_heard[:2] == [(0, 0), (1, 12)]
    assert status.control_latency is not None and status.control_latency > 0
    assert session.ring.underrun_blocks == 0                         # late chunks are stretched, never silent
    preroll = session.player.preroll_samples
    assert not played[:preroll].any() and np.abs(played[preroll:preroll + 640]).max() > 1e-3
    joins = [m.ring_pos + preroll for m in list(session.scheduler.marks)[1:] if m.ring_pos + preroll < len(played) - 64]
    assert len(joins) >= 2
    at_joins, elsewhere = join_jumps(played[preroll:], [j - preroll for j in joins])
    assert at_joins <= elsewhere                                     # no join makes a bigger step than the music


@pytest.mark.parametrize("at_start", [True, False])
def test_the_session_takes_the_neutral_face_at_start_as_prepare_does_per_take(tmp_path, face_video, at_start):
    settings = override(Settings(), {"camera.source": str(face_video), "engine.kind": "synth",
                                     "tracking.calibrate_at_start": at_start})
    session = LiveSession(settings, build_source(settings), CaptureThread(open_source(str(face_video), settings.camera)),
                          output="file", duration=1.0)
    session.start()
    assert session.wait(timeout=30)
    session.stop()
    tracker = session.tracking.tracker
    assert not tracker.calibrating
    assert (tracker.neutral is not None) == at_start


def test_build_source_falls_back_to_the_synth_without_weights(tmp_path):
    settings = override(Settings(), {"model.dir": str(tmp_path / "empty")})
    assert isinstance(build_source(settings), SynthSource)
    with pytest.raises(SessionError, match="no MusicGen weights in .*empty.*download"):
        build_source(override(settings, {"engine.kind": "musicgen"}))


def test_synth_session_from_a_recording_applies_the_dsp_path(tmp_path):
    from expotion_live.features.schema import FeatureFrame

    frames = [FeatureFrame(t=i / 30, motion_energy=0.0) for i in range(60)]   # a still performer
    settings = override(Settings(), {"engine.kind": "synth", "audio.out": str(tmp_path / "synth.wav"),
                                     "audio.min_gain": 0.5})
    session = LiveSession(settings, build_source(settings), frames, output="file", duration=1.0)
    session.start()
    assert session.wait(timeout=30)
    status = session.status()
    session.stop()
    assert len(sf.read(tmp_path / "synth.wav")[0]) == SR
    assert status.dsp_latency is not None and session.dsp.gain == pytest.approx(0.5, abs=0.01)  # gain at rest
    assert status.tempo > 0


def test_session_plays_through_portaudio_on_the_null_sink(null_sink, tmp_path):
    from expotion_live.features.schema import FeatureFrame

    frames = [FeatureFrame(t=i / 30, motion_energy=0.3) for i in range(90)]
    settings = override(Settings(), {"engine.kind": "synth", "audio.device": null_sink, "audio.latency": 0.2,
                                     "audio.out": str(tmp_path / "heard.wav")})   # 0.2 s: other jobs share the 2 cores
    session = LiveSession(settings, build_source(settings), frames, output="device", duration=2.0)
    assert session.status().output.lower().startswith("pulse")
    session.start()
    assert session.wait(timeout=30)
    status = session.status()
    session.stop()
    assert (session.ring.underrun_blocks, session.output.underflows) == (0, 0)
    assert status.underruns == 0 and status.time_to_first_sound is not None
    heard, _ = sf.read(tmp_path / "heard.wav", dtype="float32")
    assert len(heard) == 2 * SR and np.abs(heard).max() > 1e-3


def test_control_port_and_presets_change_one_set_of_live_settings(tmp_path):
    """A prompt sent over OSC survives a preset that only sets guidance (and vice versa)."""
    from expotion_live.features.schema import FeatureFrame
    from expotion_live.live.controller import LiveController

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "calm.toml").write_text("[generation]\ncfg = 5.0\n")
    settings = override(Settings(), {"engine.kind": "synth", "osc.control_port": 0, "osc.targets": ()})
    controller = LiveController(settings, tmp_path / "presets", notice=print)
    session = controller.open_session(settings, [FeatureFrame(t=0.0)], output="file")
    try:
        controller.set_prompt("dark drones")
        controller.load_preset("calm")
        controller.set_temperature(0.7)
    finally:
        controller.close_session()
        controller.close()
    params = session.scheduler.params
    assert (params.prompt, params.cfg, params.temperature) == ("dark drones", 5.0, 0.7)
    assert controller.settings.generation.prompt == "dark drones" and controller.settings.generation.cfg == 5.0


def test_a_stream_window_too_short_for_its_context_is_refused_naming_the_keys(tiny_musicgen_dir):
    settings = override(Settings(), {"model.dir": str(tiny_musicgen_dir), "engine.kind": "musicgen",
                                     "generation.context_seconds": 9.0, "generation.window_seconds": 9.5})
    with pytest.raises(SessionError, match=r"generation.window_seconds \(9.5\) must exceed context_seconds"):
        build_source(settings)
