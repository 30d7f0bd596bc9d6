"""Prompt steering: words follow tracked tempo and expression, and hold still under jitter."""
from __future__ import annotations

import numpy as np

from expotion_live.engine.steering import PromptSteerer, read_mood
from expotion_live.engine.synth import synthetic_performance
from expotion_live.features.schema import EXPRESSION_NAMES, GEOMETRY_DIM, TimelineWindow

PROMPT = "warm electronic groove with soft pads"


def steer_for(steerer: PromptSteerer, chunks: int, **performer) -> list[tuple[str, tuple[str, ...]]]:
    """Feed `chunks` 4-second windows of one performer (a fresh noise seed each chunk): (prompt, words) of each."""
    return [steerer.steer(PROMPT, synthetic_performance(4.0, seed=1000 * k + int(performer["bpm"]), **performer))
            for k in range(chunks)]


def test_words_name_tempo_and_mood_and_join_the_prompt():
    steerer = PromptSteerer()
    prompt, words = steer_for(steerer, 1, bpm=97, level=0.9, smile=0.8)[0]
    assert words == ("at 96 bpm", "energetic", "uplifting")
    assert prompt == PROMPT + ", at 96 bpm, energetic, uplifting"

    slow = PromptSteerer()
    _, words = steer_for(slow, 1, bpm=67, level=0.3, smile=-0.7)[0]
    assert words == ("at 68 bpm", "melancholic")

    still = PromptSteerer()          # barely moving: no beat to name, just calm
    _, words = steer_for(still, 1, bpm=67, level=0.0, smile=-0.7, noise=0.005)[0]
    assert words == ("calm", "melancholic")


def test_words_change_when_tempo_changes():
    steerer = PromptSteerer()
    before = steer_for(steerer, 2, bpm=96, level=0.5, smile=0.0)
    assert before[-1][1] == ("at 96 bpm",)
    history = steer_for(steerer, 3, bpm=140, level=0.5, smile=0.0)
    assert history[-1][1] == ("at 140 bpm",)
    prompts = [prompt for prompt, _ in before + history]
    assert prompts[-1] != prompts[1]
    assert prompts[-1] == prompts[-2]                # settled: no re-encoding once the word holds


def test_words_change_when_expression_changes():
    steerer = PromptSteerer()
    assert steer_for(steerer, 2, bpm=110, level=0.5, smile=0.0)[-1][1] == ("at 112 bpm",)
    smiling = steer_for(steerer, 1, bpm=110, level=0.5, smile=0.8)[-1]
    assert smiling[1] == ("at 112 bpm", "uplifting")
    frowning = steer_for(steerer, 1, bpm=110, level=0.5, smile=-0.8)[-1]
    assert frowning[1] == ("at 112 bpm", "melancholic")
    dancing = steer_for(steerer, 1, bpm=110, level=1.0, smile=-0.8)[-1]
    assert "energetic" in dancing[1]


def test_words_stay_put_under_small_jitter():
    steerer = PromptSteerer()
    rng = np.random.default_rng(3)
    prompts, seen = [], set()
    for k in range(20):
        # Tempo wobbling by a couple of BPM, mood hovering near the "uplifting" threshold.
        window = synthetic_performance(4.0, bpm=100 + rng.uniform(-2, 2), level=0.45 + rng.uniform(-0.05, 0.05),
                                       smile=0.25 + rng.uniform(-0.05, 0.05), seed=k)
        prompt, words = steerer.steer(PROMPT, window)
        prompts.append(prompt)
        seen.add(words)
    encodes = sum(prompt != before for before, prompt in zip([None, *prompts], prompts))   # new prompts for T5
    assert encodes <= 2, seen                        # the first, and at most one settle
    assert all(words[0] == "at 100 bpm" for words in seen)


def test_the_same_window_keeps_the_prompt_and_a_new_performer_prompt_leads_the_words():
    steerer = PromptSteerer()
    window = synthetic_performance(4.0, bpm=120, level=0.5)
    first, _ = steerer.steer(PROMPT, window)
    again, _ = steerer.steer(PROMPT, window)
    assert again == first                            # nothing new for T5 to encode
    prompt, _ = steerer.steer("dark techno", window)
    assert prompt.startswith("dark techno, at 120 bpm")


def test_no_tempo_word_before_a_beat_is_seen():
    steerer = PromptSteerer()
    still = synthetic_performance(4.0, bpm=100, level=0.0, noise=0.0)
    _, words = steerer.steer(PROMPT, still)
    assert not any("bpm" in w for w in words)
    short = synthetic_performance(1.0, bpm=100, level=0.5)          # too short to hold two beats at 60 BPM
    _, words = steerer.steer(PROMPT, short)
    assert not any("bpm" in w for w in words)


def test_mood_reads_deviation_from_the_neutral_face():
    window = synthetic_performance(2.0, bpm=100, level=0.0, noise=0.0)
    assert abs(read_mood(window).valence) < 1e-6
    face = window.face.copy()
    face[:, GEOMETRY_DIM + EXPRESSION_NAMES.index("mouth_height")] = 1.0    # mouth wide open
    opened = read_mood(TimelineWindow(window.t_end, face, window.motion, window.flow))
    assert opened.arousal > read_mood(window).arousal
    face[:, -1] = 0.0                                                       # face lost: neutral
    lost = read_mood(TimelineWindow(window.t_end, face, window.motion, window.flow))
    assert lost.valence == 0.0
