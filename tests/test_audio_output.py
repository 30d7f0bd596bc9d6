"""Audio out: a real PortAudio stream on the PulseAudio null sink, device lookup, atomic WAV."""
import time

import numpy as np
import pytest
import soundfile as sf

from expotion_live.audio.dsp import DspPath
from expotion_live.audio.output import (AudioDeviceError, AudioStream, BlockPlayer, FileSink, WavRecorder,
                                        find_output_device)
from expotion_live.audio.ring_buffer import RingBuffer
from expotion_live.engine.scheduler import ChunkScheduler
from test_engine_scheduler import BLOCK, PARAMS, SR, ToneSource, blank_window, timing


def test_unknown_device_error_lists_the_devices(null_sink):
    with pytest.raises(AudioDeviceError, match="no output device matches 'no-such-card'.*pulse"):
        find_output_device("no-such-card")
    assert find_output_device("PULSE") == find_output_device("pulse")     # case-insensitive substring


def test_stream_on_null_sink_plays_with_zero_underruns_and_records_what_played(null_sink, tmp_path):
    ring = RingBuffer(4 * SR)
    player = BlockPlayer(ring, DspPath(SR, BLOCK))
    recorder = WavRecorder(tmp_path / "played.wav", SR)
    player.tap = recorder
    stream = AudioStream(player, null_sink, SR, BLOCK, latency=0.2)   # device buffer: other jobs share the 2 cores
    device_buffer = stream.latency_seconds          # pulled in bursts: the ring keeps it in hand (as LiveSession does)
    scheduler = ChunkScheduler(ToneSource(), ring, blank_window, PARAMS, timing(), realtime=True,
                               min_lead_seconds=0.2 + device_buffer, low_water_seconds=0.08 + device_buffer)
    player.start_samples = scheduler.low_water      # as LiveSession does: the device's first burst is covered
    scheduler.start()
    stream.start()
    while player.blocks_played * BLOCK < 3 * SR and scheduler.error is None:
        time.sleep(0.05)
    stream.stop()
    scheduler.stop()
    recorder.close()
    assert scheduler.error is None
    assert ring.underrun_blocks == 0 and stream.underflows == 0
    assert player.first_sound_time > 0
    played, sr = sf.read(tmp_path / "played.wav", dtype="float32")
    assert sr == SR and len(played) == player.blocks_played * BLOCK and recorder.dropped_samples == 0
    first = int(np.argmax(np.abs(played) > 1e-4)) - 1                 # the tone starts at sin(0) = 0
    expected = 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(len(played) - first) / SR)
    np.testing.assert_allclose(played[first:], expected, atol=1e-4)   # the file is exactly what was played


def test_recording_is_atomic(tmp_path):
    target = tmp_path / "show.wav"
    target.write_bytes(b"previous take")
    recorder = WavRecorder(target, SR)
    recorder.push(np.ones(100, np.float32))
    recorder.abort()
    assert target.read_bytes() == b"previous take"                     # an aborted take loses nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["show.wav"]  # and leaves no temporary file
    recorder = WavRecorder(target, SR)
    recorder.push(np.full(100, 0.25, np.float32))
    recorder.close()
    data, _ = sf.read(target, dtype="float32")
    np.testing.assert_array_equal(data, np.full(100, 0.25, np.float32))


def test_paced_file_sink_plays_the_requested_duration():
    ring = RingBuffer(SR)
    ring.write(np.full(SR // 2, 0.5, np.float32))
    player = BlockPlayer(ring, DspPath(SR, BLOCK))
    sink = FileSink(player, SR, BLOCK, realtime=True, duration=0.25)
    sink.start()
    assert sink.finished.wait(5)
    sink.stop()
    assert player.blocks_played == round(0.25 * SR / BLOCK)
    assert ring.read_index == player.blocks_played * BLOCK and ring.underrun_blocks == 0


def test_playback_waits_for_start_samples_then_never_counts_the_wait_as_underrun():
    ring = RingBuffer(SR)
    player = BlockPlayer(ring, DspPath(SR, BLOCK, enabled=False))
    player.start_samples = 3 * BLOCK           # the device's first burst
    block = np.zeros(BLOCK, np.float32)
    ring.write(np.full(2 * BLOCK, 0.5, np.float32))
    player.fill(block)                          # a first chunk shorter than the burst waits
    assert ring.read_index == 0 and not block.any() and player.preroll_samples == BLOCK
    ring.write(np.full(2 * BLOCK, 0.5, np.float32))
    for _ in range(4):
        player.fill(block)
        assert (block == 0.5).all()
    player.fill(block)                          # the ring ran dry after the first sound: that is an underrun
    assert ring.underrun_blocks == 1 and player.preroll_samples == BLOCK
