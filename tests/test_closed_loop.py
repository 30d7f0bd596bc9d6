"""The closed loop, end to end: an adaptor plays as it was trained.

Tracked face videos whose music switches with a gesture at a random moment per clip
(`closed_loop`) go through `prepare` and `train` as a performer's own recordings would.
A new video (held out as the test split) is then played (a) live by `run --headless`,
its chunks ending on the beats of an Ableton Link session (in a loopback-only network
namespace), at int8, (b) by `generate --adaptor --video` and (c) by `evaluate`. The
generated codes must follow the gesture both ways, each switch within one frame of
where teacher-forced predictions on the same frames put it: the training-time picture
of "which frame conditions which code" is the one that plays. Live, the switch heard in
the played audio must come when the run's reported control latency says it does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import in_loopback_namespace
from closed_loop import random_gesture, switches, write_clip
from expotion_live.cli import main
from expotion_live.features.recording import load_recording
from expotion_live.features.schema import FRAME_RATE, TimelineWindow
from expotion_live.features.timeline import FeatureTimeline
from expotion_live.model.conditioning import ChunkWindow
from expotion_live.model.decoder import fused_attention
from expotion_live.model.delay_pattern import DelayPattern
from expotion_live.model.sampling import guide
from expotion_live.train.dataset import cache_dir_for, load_clip

CAPTION = "music with catchy melody"          # the default caption: the clips have none
TRAIN_CLIPS, CLIP_SECONDS = 16, 4.0           # one piece of the longest live window (WINDOW) per clip
TEST_CLIP, TEST_SECONDS, GESTURE = "new", 3.0, (0.6, 1.4)
WINDOW, CONTEXT, CHUNK = 3.6, 1.2, 0.3        # [generation]: seconds; no test stream slides
LIVE_SECONDS = 2.8

SETTINGS = """
[model]
dir = "{model}"
precision = "fp32"
[generation]
prompt = "{caption}"
seed = 0
top_k = 1
window_seconds = {window}
context_seconds = {context}
chunk_seconds = {chunk}
first_chunk_seconds = {chunk}
[camera]
loop = false
[audio]
dsp = false
[osc]
targets = []
control_port = 0
"""


@pytest.fixture(scope="module")
def loop(tiny_musicgen_dir, tmp_path_factory):
    """The dataset prepared and an adaptor trained on it: (folder, settings file, adaptor folder)."""
    root = tmp_path_factory.mktemp("closed-loop")
    data = root / "data"
    rng = np.random.default_rng(7)
    for i in range(TRAIN_CLIPS):
        write_clip(data / f"take{i:02d}", CLIP_SECONDS, *random_gesture(rng, CLIP_SECONDS))
    write_clip(data / TEST_CLIP, TEST_SECONDS, *GESTURE)
    (data / "split.json").write_text(json.dumps({"train": [f"take{i:02d}" for i in range(TRAIN_CLIPS)],
                                                 "test": [TEST_CLIP]}))
    config = root / "settings.toml"
    config.write_text(SETTINGS.format(model=tiny_musicgen_dir, caption=CAPTION, window=WINDOW, context=CONTEXT,
                                      chunk=CHUNK))
    assert main(["--config", str(config), "prepare", str(data), "--min-seconds", "1"]) == 0
    run = root / "run"
    assert main(["--config", str(config), "train", str(data), "--out", str(run), "--segment-seconds", str(WINDOW),
                 "--epochs", "120", "--batch-size", "4", "--warmup-epochs", "1", "--quiet"]) == 0
    return data, config, run / "best"


def teacher_forced(musicgen, adaptor, features: TimelineWindow, codes: np.ndarray) -> np.ndarray:
    """(T,) the finest codebook's most likely token at each frame, teacher-forced on `codes` (K, T) as
    training scores them (frame t of `features` at position t, one window from position 0), guided
    as generation is (CFG 3: the caption's text and its null)."""
    K, T = codes.shape
    decoder = musicgen.decoder
    with torch.no_grad():
        prefix = adaptor.prefix(features, ChunkWindow(done=0, n=T, frames=features.n_frames, first=0, K=K))
        seq = DelayPattern(K, T, decoder.config.pad_token_id).build(torch.from_numpy(codes[None]).long())
        text = musicgen.encode_text([CAPTION]).with_null()
        logits = guide(decoder(torch.cat([seq, seq])[..., :-1], text, prefix, attend=fused_attention), 3.0)
    return logits[0, K - 1, K - 1:K - 1 + T].argmax(-1).numpy()   # codebook K-1 of frame t: position t + K - 1


def state_switches(tokens: np.ndarray, still: int, moving: int) -> list[tuple[int, bool]]:
    """[(frame, now moving)] of a token sequence that mostly holds one of the two code sets: a frame holding
    neither (a sway's turn, the moment of a stop) keeps the state before it."""
    known = np.isin(tokens, (still, moving))
    assert known.mean() > 0.8 and known[0], tokens
    held = np.maximum.accumulate(np.where(known, np.arange(len(tokens)), 0))   # the latest known frame
    return switches(tokens[held] == moving)


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def adaptor(loop, musicgen):
    from expotion_live.model.adaptor import load_adaptor

    return load_adaptor(loop[2], musicgen).eval()


def code_sets(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(still, moving) (K,): the code of each music, read from the prepared test clip (most frequent per codebook)."""
    clip = load_clip(cache_dir_for(data), TEST_CLIP)
    moving = gesture_mask(np.arange(clip.n_frames) / FRAME_RATE)
    codes = np.asarray(clip.codes)
    still_codes = np.array([np.bincount(row[~moving]).argmax() for row in codes])
    moving_codes = np.array([np.bincount(row[moving]).argmax() for row in codes])
    assert still_codes[-1] != moving_codes[-1]           # the finest codebook tells them apart
    return still_codes, moving_codes


def gesture_mask(times: np.ndarray) -> np.ndarray:
    """True where the test video's face sways (video seconds)."""
    return (times >= GESTURE[0]) & (times < GESTURE[1])


def lag_frames(found: list[tuple[int, bool]], times: np.ndarray) -> list[float]:
    """How late (in 50 Hz frames) each switch's code meets its video frame after the gesture's own switch."""
    return [round((times[frame] - GESTURE[0 if moving else 1]) * FRAME_RATE, 1) for frame, moving in found]


def test_generate_and_evaluate_follow_the_gesture_where_training_predicts(loop, musicgen, adaptor, tmp_path):
    data, config, best = loop
    still, moving = code_sets(data)
    clip = load_clip(cache_dir_for(data), TEST_CLIP)
    T, K = clip.n_frames, len(still)
    rows = np.minimum(np.arange(T + K - 1), T - 1)        # the positions past the last frame hold it, as offline
    features = TimelineWindow(t_end=(T + K - 2) / FRAME_RATE, face=np.asarray(clip.face)[rows],
                              motion=np.asarray(clip.motion)[rows], flow=np.asarray(clip.flow)[rows])
    expected = state_switches(teacher_forced(musicgen, adaptor, features, np.asarray(clip.codes)),
                              still[-1], moving[-1])
    assert [now_moving for _, now_moving in expected] == [True, False], expected   # it learned both ways

    # (b) generate --adaptor --video: the live engine offline, chunk by chunk
    out, codes_out = tmp_path / "generated.wav", tmp_path / "codes.npy"
    video = data / TEST_CLIP / "video.mp4"
    assert main(["--config", str(config), "generate", "--adaptor", str(best), "--video", str(video), "--greedy",
                 "--out", str(out), "--codes-out", str(codes_out)]) == 0
    generated = state_switches(np.load(codes_out)[-1], still[-1], moving[-1])
    times = np.arange(T) / FRAME_RATE
    print(f"\ngenerate --video: switches at frames {generated}, teacher-forced {expected}; lag behind the "
          f"gesture {lag_frames(generated, times)} frames (teacher-forced {lag_frames(expected, times)})")
    assert [now_moving for _, now_moving in generated] == [True, False], generated
    for (got, _), (want, _) in zip(generated, expected):
        assert abs(got - want) <= 1, (generated, expected)

    # (c) evaluate renders the test clip as generate plays it, and scores that
    audio_dir = tmp_path / "evaluated"
    assert main(["--config", str(config), "evaluate", str(data), "--adaptor", str(best), "--seconds",
                 str(TEST_SECONDS), "--top-k", "1", "--audio-out", str(audio_dir), "--json",
                 str(tmp_path / "scores.json"), "--quiet"]) == 0
    evaluated, _ = sf.read(audio_dir / f"{TEST_CLIP}.wav", dtype="float32")
    played, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(evaluated, played)


def played_states(audio: np.ndarray, musicgen, still: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """(blocks,) True where a 20 ms block of played audio is the moving music.

    A code held still decodes, once the codec's state has settled, to a waveform that repeats
    every code frame (hop samples), so any hop-long block holds one whole period and its
    magnitude spectrum does not depend on where the block starts: each block is the music whose
    spectrum it is nearer.
    """
    hop = musicgen.sample_rate // FRAME_RATE

    def spectrum(samples: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.rfft(samples.reshape(-1, hop), axis=-1))

    def settled(codes: np.ndarray) -> np.ndarray:
        held = torch.from_numpy(np.repeat(codes[:, None], FRAME_RATE, axis=1))[None].long()
        return spectrum(musicgen.decode_audio(held)[0][hop * 30:hop * 31])[0]

    references = np.stack([settled(still), settled(moving)])                    # (2, bins)
    blocks = spectrum(audio[: len(audio) // hop * hop])                          # (blocks, bins)
    distance = np.linalg.norm(blocks[:, None] - references[None], axis=-1)       # (blocks, 2)
    return distance[:, 1] < distance[:, 0]


def test_the_heard_music_is_told_apart_to_the_block(loop, musicgen):
    """The classifier the live check listens with: designed codes, still for a second and then moving,
    decode to blocks it names right from a few blocks in, switching within a block of the codes."""
    still, moving = code_sets(loop[0])
    codes = np.concatenate([np.repeat(still[:, None], FRAME_RATE, axis=1),
                            np.repeat(moving[:, None], FRAME_RATE, axis=1)], axis=1)
    audio = musicgen.decode_audio(torch.from_numpy(codes)[None].long())[0]
    heard = played_states(np.asarray(audio).reshape(-1), musicgen, still, moving)
    assert not heard[5:FRAME_RATE - 1].any() and heard[FRAME_RATE + 1:].all(), heard


def test_live_run_follows_the_gesture_where_training_predicts_and_is_heard_when_it_says(
        loop, musicgen, adaptor, tmp_path):
    data, config, best = loop
    still, moving = code_sets(data)
    K = len(still)
    live_config = tmp_path / "live.toml"
    live_config.write_text(config.read_text() + '\n[link]\nmode = "follow"\n')
    wav, log_file, tracked = tmp_path / "live.wav", tmp_path / "codes.npz", tmp_path / "tracking.npz"
    result = in_loopback_namespace(
        [sys.executable, "-m", "expotion_live.cli", "--config", str(live_config), "run", "--headless", "--engine",
         "musicgen", "--adaptor", str(best), "--video", str(data / TEST_CLIP / "video.mp4"), "--precision", "int8",
         "--file-only", "--out", str(wav), "--codes-out", str(log_file), "--tracking-out", str(tracked),
         "--duration", str(LIVE_SECONDS)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ableton Link (follow)" in result.stderr
    log = np.load(log_file)
    codes, frame_times, chunk = log["codes"], log["frame_times"], log["chunk"]
    lengths = np.bincount(chunk)
    assert len(set(lengths[1:-1].tolist()) - {round(CHUNK * FRAME_RATE)}), lengths   # chunks end on Link's beats
    assert codes.shape[1] + K <= round(WINDOW * FRAME_RATE)                        # one stream window: no slide

    # Teacher-forced on exactly the frames the run tracked, each at the position the run gave it.
    timeline = FeatureTimeline(seconds=60.0)
    for frame in load_recording(tracked):
        frame.t += float(log["tracking_start"])
        timeline.push(frame)
    times = np.concatenate([frame_times, frame_times[-1] + np.arange(1, K) / FRAME_RATE])   # the last chunk's newest
    windows = [timeline.window(1, t_end=t) for t in times]
    features = TimelineWindow(t_end=times[-1], face=np.concatenate([w.face for w in windows]),
                              motion=np.concatenate([w.motion for w in windows]),
                              flow=np.concatenate([w.flow for w in windows]))
    truth = np.where(gesture_mask(frame_times)[None], moving[:, None], still[:, None])   # (K, T) the trained music
    expected = state_switches(teacher_forced(musicgen, adaptor, features, truth), still[-1], moving[-1])
    live = state_switches(codes[-1], still[-1], moving[-1])
    print(f"\nrun (live, Link-beat chunks {sorted(set(lengths.tolist()))}, int8): switches at frames {live}, "
          f"teacher-forced {expected}; lag behind the gesture {lag_frames(live, frame_times)} frames "
          f"(teacher-forced {lag_frames(expected, frame_times)})")
    assert [now_moving for _, now_moving in expected] == [True, False], expected
    assert [now_moving for _, now_moving in live] == [True, False], live
    for (got, _), (want, _) in zip(live, expected):
        assert abs(got - want) <= 1, (live, expected)

    # The reported latency is the run's own account of its codes: each code its chunk's window placed (all
    # but a streamed chunk's first K, placed by the window before) is heard that long after its frame.
    hop_seconds = 1 / FRAME_RATE
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for c, (start, n) in enumerate(zip(starts, lengths)):
        if np.isfinite(log["latency"][c]):
            j = np.arange(0 if c == 0 else K, n)
            np.testing.assert_allclose(frame_times[start + j] + log["latency"][c], log["heard"][c] + j * hop_seconds,
                                       rtol=0, atol=1e-6)

    # What a performer hears: the switch in the played audio comes where the run says its code is heard, on
    # the recording's own sample clock (wall-clock stamps of the sink's reads jitter by a block or two).
    # Before the start every code is the still music, so the start is timed both ways; a stop's last codes
    # may be neither music (the model weighing a stop against a turn of the sway), so only its arrival is.
    audio, sample_rate = sf.read(wav, dtype="float32")
    hop = sample_rate // FRAME_RATE
    for frame, now_moving in live:
        c = chunk[frame]
        said = int(log["heard_sample"][c]) + (frame - starts[c]) * hop    # the WAV sample where its code begins
        phase = said % hop                                               # blocks on the code frames' own grid
        heard = played_states(audio[phase:], musicgen, still, moving)
        block = (said - phase) // hop
        earliest = block - (10 if now_moving else 2)
        block = earliest + int(np.argmax(heard[earliest:] == now_moving))    # the first block of the new music
        at = phase + block * hop
        gesture = GESTURE[0 if now_moving else 1]
        delay = log["heard"][c] + (frame - starts[c]) * hop_seconds - gesture
        print(f"{'start' if now_moving else 'stop'}: gesture at {gesture:.2f} s, heard {(at - said) / sample_rate:+.3f} "
              f"s from where the run says its code sounds, {delay:.3f} s after the gesture; chunk latency "
              f"{log['latency'][c]:.3f} s")
        if now_moving:
            assert abs(at - said) <= 2 * hop, (at, said)
            assert not heard[block - 25:block].any(), heard[block - 25:block]   # still for the half second before
        else:
            assert at <= said + 2 * hop, (at, said)
