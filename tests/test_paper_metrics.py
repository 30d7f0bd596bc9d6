"""The rest of Table 1's metrics: IS from the tagger's logits, FAD on VGGish, and clear lines for PaSST and LanguageBind."""
from __future__ import annotations

import numpy as np
import pytest

from expotion_live.train.metrics import LanguageBind, MetricsError, Passt, VGGish, audio_metrics, inception_score

SR = 32000


def test_inception_score_is_one_for_one_label_and_the_label_count_for_sure_distinct_ones():
    sure = np.eye(4) * 60.0                                     # each clip certain of its own label
    assert inception_score(sure) == pytest.approx(4.0, rel=1e-6)
    assert inception_score(np.tile(sure[0], (4, 1))) == pytest.approx(1.0, rel=1e-9)   # all the same label
    assert inception_score(np.zeros((3, 5))) == pytest.approx(1.0)                      # undecided
    mixed = inception_score(np.random.default_rng(0).normal(size=(8, 5)))
    assert 1.0 < mixed < 5.0


@pytest.fixture(scope="module")
def vggish_weights(tmp_path_factory):
    """VGGish as torchvggish builds it, random weights saved as its release file is (a state dict)."""
    import torch
    import torchvggish

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(torchvggish.VGG(torchvggish.make_layers(), postprocess=False).state_dict(), path)
    return path


def test_vggish_fad_is_zero_for_the_same_music_and_grows_with_a_difference(vggish_weights):
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    music = [np.sin(2 * np.pi * f * t).astype(np.float32) * 0.5 for f in (220, 330, 440)]
    noise = [rng.normal(0, 0.3, 2 * SR).astype(np.float32) for _ in range(3)]
    vggish = VGGish(vggish_weights)
    frames = vggish(music, SR)
    assert frames.shape == (6, 128)                              # two 0.96 s frames per 2 s clip
    same = audio_metrics(music, music, [""] * 3, SR, None, None, vggish=vggish)
    assert same == {"fad_vggish": pytest.approx(0.0, abs=1e-8)}
    assert audio_metrics(noise, music, [""] * 3, SR, None, None, vggish=vggish)["fad_vggish"] > 1e-5   # random weights: small
    with pytest.raises(MetricsError, match="at least 0.96 s"):
        vggish([np.zeros(SR // 4, np.float32)], SR)


def test_paper_networks_say_what_is_missing_in_one_line(tmp_path, vggish_weights):
    with pytest.raises(MetricsError, match="weights .*nope.pth not found.*nothing is downloaded"):
        VGGish(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(MetricsError, match="is not a VGGish state dict"):
        VGGish(tmp_path / "bad.pth")
    import torch

    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(MetricsError, match="does not fit VGGish"):
        VGGish(tmp_path / "other.pth")
    with pytest.raises(MetricsError, match="PaSST KL needs the hear21passt package.*pip install hear21passt"):
        Passt(vggish_weights)                                    # not installable beside this torch
    with pytest.raises(MetricsError, match="has no video/config.json"):
        LanguageBind(tmp_path)
    for name in ("video", "audio"):
        (tmp_path / "lb" / name).mkdir(parents=True)
        (tmp_path / "lb" / name / "config.json").write_text("{}")
    with pytest.raises(MetricsError, match="needs the languagebind package.*transformers < 5"):
        LanguageBind(tmp_path / "lb")
