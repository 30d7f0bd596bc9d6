"""The paper's music-quality and text-audio metrics (§4.4.1), beside the rhythm ones of `evaluate`.

- FAD: the Fréchet distance between Gaussians fitted to the embeddings of two sets of
  music, the generated test clips against the test clips' real music (whole sets; one
  number per run, not per clip). Lower is closer to real music.
- KL: for each clip, KL(p_ref || p_gen) between an audio classifier's label
  distributions (softmax over its labels) of the real and the generated music, averaged.
- IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) of the classifier's label
  distributions over the generated set; higher is more varied and more decided.
- CLAP score: cosine similarity between CLAP's embedding of the clip's caption and of
  the generated music, averaged. Higher follows the text better.
- Video-music score: the same cosine between LanguageBind's embeddings of the clip's
  video and of the generated music.

Networks: the paper used VGGish (FAD), PaSST (KL), LAION CLAP and LanguageBind. The
classifier of FAD, KL and IS is transformers' Audio Spectrogram Transformer (an AudioSet
tagger such as `MIT/ast-finetuned-audioset-10-10-0.4593`), and CLAP is transformers'
`ClapModel`, both read from a local folder in the hub's layout. The paper's own
networks come from their packages with weights from a local file, never fetched:
VGGish through torchvggish (FAD-VGG, comparable with the paper's column), PaSST through
hear21passt (KL), LanguageBind through languagebind; where a package is missing the
error says what to install.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class MetricsError(ValueError):
    """A metric model or input that cannot be used; the message says what to do."""


# --- the maths ------------------------------------------------------------------------------


def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of (N, D) embeddings, in float64."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricsError(f"FAD needs at least 2 embeddings of one size, got an array of shape {x.shape}: "
                           f"evaluate more clips")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """d² = |mu_a - mu_b|² + Tr(cov_a + cov_b - 2 (cov_a cov_b)^½) (Fréchet / Wasserstein-2 between Gaussians).

    Tr((cov_a cov_b)^½) is taken as Tr((A^½ cov_b A^½)^½) with A = cov_a: the same
    eigenvalues, but a symmetric matrix, so no complex round-off as with a general sqrtm.
    """
    root_a = _psd_sqrt(cov_a)
    cross = np.trace(_psd_sqrt(root_a @ cov_b @ root_a))
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))


def fad(generated: np.ndarray, reference: np.ndarray) -> float:
    """Fréchet audio distance between two sets of (N, D) embeddings."""
    if np.shape(generated)[1:] != np.shape(reference)[1:]:
        raise MetricsError(f"embeddings of sizes {np.shape(generated)[1:]} and {np.shape(reference)[1:]} differ")
    return frechet_distance(*gaussian(generated), *gaussian(reference))


def kl_divergence(reference_logits: np.ndarray, generated_logits: np.ndarray) -> float:
    """Mean over clips of KL(p_ref || p_gen), p = softmax over the classifier's labels; (N, labels) each."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(reference_logits), log_softmax(generated_logits)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))


def inception_score(logits: np.ndarray) -> float:
    """exp(mean over clips of KL(p(y|x) || p(y))), p(y|x) = softmax of (N, labels) logits, p(y) their mean."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(marginal + 1e-30)), axis=-1))))


def paired_cosine(a_embeddings: np.ndarray, b_embeddings: np.ndarray) -> float:
    """Mean cosine similarity of matching rows of (N, D) embeddings (text or video against audio)."""
    t = np.asarray(a_embeddings, dtype=np.float64)
    a = np.asarray(b_embeddings, dtype=np.float64)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    return float(np.mean(np.sum(t * a, axis=-1)))


# --- the models -----------------------------------------------------------------------------


def _model_dir(path: str | os.PathLike, what: str, example: str) -> Path:
    """A local model folder in the hub's layout, or a clear error naming what is missing."""
    folder = Path(path)
    missing = [name for name in ("config.json", "preprocessor_config.json") if not (folder / name).is_file()]
    if missing:
        raise MetricsError(f"{what} folder {folder} has no {missing[0]}: give a local copy of a transformers "
                           f"{what} in the hub's layout (e.g. {example}, saved with save_pretrained); "
                           f"nothing is downloaded")
    return folder


BATCH = 8   # pieces per forward pass: a whole test set at once may not fit


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    import librosa

    return audio if rate == target else librosa.resample(audio.astype(np.float32), orig_sr=rate, target_sr=target)


class AudioClassifier:
    """An Audio Spectrogram Transformer tagger: pooled embeddings (FAD) and label logits (KL)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        folder = _model_dir(path, "audio classifier", "MIT/ast-finetuned-audioset-10-10-0.4593")
        self.features = AutoFeatureExtractor.from_pretrained(folder)
        self.model = AutoModelForAudioClassification.from_pretrained(folder).to(device).eval()
        self.device = device

    def __call__(self, audio: list[np.ndarray], sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) embeddings and (N, labels) logits of N pieces of mono audio at `sample_rate`."""
        import torch

        rate = self.features.sampling_rate
        embeddings, logits = [], []
        for i in range(0, len(audio), BATCH):
            inputs = self.features([_resample(a, sample_rate, rate) for a in audio[i:i + BATCH]], sampling_rate=rate,
                                   return_tensors="pt").to(self.device)
            with torch.no_grad():
                pooled = self.model.base_model(**inputs).pooler_output
                embeddings.append(pooled.float().cpu().numpy())
                logits.append(self.model.classifier(pooled).float().cpu().numpy())
        return np.concatenate(embeddings), np.concatenate(logits)


class Clap:
    """CLAP's text and audio embeddings, for the text-audio score."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        folder = _model_dir(path, "CLAP model", "laion/clap-htsat-unfused")
        self.features = AutoFeatureExtractor.from_pretrained(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ClapModel.from_pretrained(folder).to(device).eval()
        self.device = device

    def score(self, texts: list[str], audio: list[np.ndarray], sample_rate: int) -> float:
        import torch

        rate = self.features.sampling_rate
        a, t = [], []
        for i in range(0, len(audio), BATCH):
            sound = self.features([_resample(x, sample_rate, rate) for x in audio[i:i + BATCH]], sampling_rate=rate,
                                  return_tensors="pt").to(self.device)
            words = self.tokenizer(texts[i:i + BATCH], padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                a.append(self.model.get_audio_features(**sound).pooler_output.float().cpu().numpy())
                t.append(self.model.get_text_features(**words).pooler_output.float().cpu().numpy())
        return paired_cosine(np.concatenate(t), np.concatenate(a))


def _package(module: str, what: str, install: str):
    """Import `module` for `what`, or a MetricsError saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MetricsError(f"{what} needs the {module} package ({err}): {install}") from None


def _weights(path: str | os.PathLike, what: str, example: str) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{what} weights {path} not found: give a local copy of {example}; nothing is downloaded")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:     # any unreadable file: pickle, zip or torch errors
        raise MetricsError(f"{path} is not a {what} state dict: {err}") from None


class VGGish:
    """VGGish (torchvggish) 128-d embeddings of each 0.96 s frame at 16 kHz, for FAD as the paper's column.

    Taken before the last ReLU and without the PCA post-processing, as the
    frechet-audio-distance package takes them; FAD compares all frames of both sets.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "cpu"):
        from torch import nn

        self.vggish = _package("torchvggish", "VGGish FAD", "pip install torchvggish resampy")
        model = self.vggish.VGG(self.vggish.make_layers(), postprocess=False)
        try:
            model.load_state_dict(_weights(weights, "VGGish", "vggish-10086976.pth (torchvggish's release)"))
        except RuntimeError as err:
            raise MetricsError(f"{weights} does not fit VGGish: {str(err).splitlines()[0]}") from None
        model.embeddings = nn.Sequential(*list(model.embeddings.children())[:-1])
        self.model = model.to(device).eval()
        self.device = device

    def __call__(self, audio: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """(frames of all pieces, 128) embeddings."""
        import torch

        frames = [self.vggish.waveform_to_examples(a.astype(np.float64), sample_rate, return_tensor=True)
                  for a in audio]
        x = torch.cat(frames).float().to(self.device)               # (N, 1, 96, 64) log-mel patches
        if x.shape[0] == 0:
            raise MetricsError("VGGish needs at least 0.96 s of audio per clip: evaluate with a longer --seconds")
        with torch.no_grad():
            return self.model(x).cpu().numpy()


class Passt:
    """PaSST (hear21passt's passt_s_swa_p16_128_ap476) AudioSet logits at 32 kHz, for the paper's KL."""

    def __init__(self, weights: str | os.PathLike, device: str = "cpu"):
        install = "pip install hear21passt timm torchaudio (a torchaudio built for your torch)"
        _package("hear21passt", "PaSST KL", install)
        passt = _package("hear21passt.models.passt", "PaSST KL", install)
        preprocess = _package("hear21passt.models.preprocess", "PaSST KL", install)
        wrapper = _package("hear21passt.wrapper", "PaSST KL", install)
        net = passt.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False)
        net.load_state_dict(_weights(weights, "PaSST", "passt-s-f128-p16-s10-ap.476-swa.pt (hear21passt's release)"))
        mel = preprocess.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48,
                                        timem=192, htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10,
                                        fmax_aug_range=2000)
        self.model = wrapper.PasstBasicWrapper(mel=mel, net=net, mode="logits").to(device).eval()
        self.device = device

    def __call__(self, audio: list[np.ndarray], sample_rate: int) -> np.ndarray:
        import torch

        logits = []
        for a in audio:
            x = torch.from_numpy(_resample(a, sample_rate, 32000).astype(np.float32))[None].to(self.device)
            with torch.no_grad():
                logits.append(self.model(x).float().cpu().numpy())
        return np.concatenate(logits)


class LanguageBind:
    """LanguageBind's video and audio encoders (the languagebind package) from a local folder holding
    `video/` and `audio/` (e.g. LanguageBind/LanguageBind_Video_FT and LanguageBind_Audio_FT)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        folder = Path(path)
        missing = [name for name in ("video", "audio") if not (folder / name / "config.json").is_file()]
        if missing:
            raise MetricsError(f"LanguageBind folder {folder} has no {missing[0]}/config.json: give a folder with "
                               f"video/ (LanguageBind_Video_FT) and audio/ (LanguageBind_Audio_FT) saved from the hub")
        lb = _package("languagebind", "the LanguageBind video-music score",
                      "pip install languagebind (it needs transformers < 5: use a separate environment and "
                      "score the WAVs of --audio-out there)")
        self.video_model = lb.LanguageBindVideo.from_pretrained(folder / "video").to(device).eval()
        self.audio_model = lb.LanguageBindAudio.from_pretrained(folder / "audio").to(device).eval()
        self.video_processor = lb.LanguageBindVideoProcessor(self.video_model.config)
        self.audio_processor = lb.LanguageBindAudioProcessor(self.audio_model.config)
        self.device = device

    def score(self, videos: list[Path], audio: list[np.ndarray], sample_rate: int) -> float:
        import tempfile

        import soundfile
        import torch

        v, a = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i, (video, sound) in enumerate(zip(videos, audio)):
                wav = Path(tmp) / f"{i}.wav"
                soundfile.write(wav, sound, sample_rate)
                with torch.no_grad():
                    pixels = self.video_processor([str(video)], return_tensors="pt")["pixel_values"].to(self.device)
                    mel = self.audio_processor([str(wav)], return_tensors="pt")["pixel_values"].to(self.device)
                    v.append(self.video_model.get_image_features(pixel_values=pixels).float().cpu().numpy())
                    a.append(self.audio_model.get_image_features(pixel_values=mel).float().cpu().numpy())
        return paired_cosine(np.concatenate(v), np.concatenate(a))


def audio_metrics(generated: list[np.ndarray], reference: list[np.ndarray], captions: list[str], sample_rate: int,
                  classifier: AudioClassifier | None, clap: Clap | None, vggish: VGGish | None = None,
                  passt: Passt | None = None, languagebind: LanguageBind | None = None,
                  videos: list[Path] | None = None) -> dict:
    """The whole test set's scores: FAD, KL and IS (classifier), CLAP, FAD-VGG, KL-PaSST, video-music (LanguageBind)."""
    scores = {}
    if classifier is not None:
        gen_embeddings, gen_logits = classifier(generated, sample_rate)
        ref_embeddings, ref_logits = classifier(reference, sample_rate)
        scores["fad"] = fad(gen_embeddings, ref_embeddings)
        scores["kl"] = kl_divergence(ref_logits, gen_logits)
        scores["is"] = inception_score(gen_logits)
    if vggish is not None:
        scores["fad_vggish"] = fad(vggish(generated, sample_rate), vggish(reference, sample_rate))
    if passt is not None:
        scores["kl_passt"] = kl_divergence(passt(reference, sample_rate), passt(generated, sample_rate))
    if clap is not None:
        scores["clap"] = clap.score(captions, generated, sample_rate)
    if languagebind is not None:
        scores["video_music"] = languagebind.score(videos, generated, sample_rate)
    return scores
