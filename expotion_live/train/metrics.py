"""The paper's music-quality and text-audio metrics (§4.4.1), beside the rhythm ones of `evaluate`.

- FAD: the Fréchet distance between Gaussians fitted to the embeddings of two sets of
  music, the generated test clips against the test clips' real music (whole sets; one
  number per run, not per clip). Lower is closer to real music.
- KL: for each clip, KL(p_ref || p_gen) between an audio classifier's label
  distributions (softmax over its labels) of the real and the generated music, averaged.
- CLAP score: cosine similarity between CLAP's embedding of the clip's caption and of
  the generated music, averaged. Higher follows the text better.

Networks: the paper used VGGish (FAD), PaSST (KL) and LAION CLAP. Neither VGGish nor
PaSST has a loader that works without downloading, so the classifier is transformers'
own Audio Spectrogram Transformer (an AudioSet tagger such as `MIT/ast-finetuned-audioset-
10-10-0.4593`): its pooled embedding for FAD and its labels for KL; CLAP is transformers'
`ClapModel` (e.g. `laion/clap-htsat-unfused` or `laion/larger_clap_music`). Both are read
from a local folder in the hub's layout, never fetched; transformers is already a
dependency, so no extra package is needed.
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


def clap_score(text_embeddings: np.ndarray, audio_embeddings: np.ndarray) -> float:
    """Mean cosine similarity of matching rows of (N, D) text and audio embeddings."""
    t = np.asarray(text_embeddings, dtype=np.float64)
    a = np.asarray(audio_embeddings, dtype=np.float64)
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
        return clap_score(np.concatenate(t), np.concatenate(a))


def audio_metrics(generated: list[np.ndarray], reference: list[np.ndarray], captions: list[str], sample_rate: int,
                  classifier: AudioClassifier | None, clap: Clap | None) -> dict:
    """FAD and KL (with a classifier) and the CLAP score (with CLAP) over a whole test set."""
    scores = {}
    if classifier is not None:
        gen_embeddings, gen_logits = classifier(generated, sample_rate)
        ref_embeddings, ref_logits = classifier(reference, sample_rate)
        scores["fad"] = fad(gen_embeddings, ref_embeddings)
        scores["kl"] = kl_divergence(ref_logits, gen_logits)
    if clap is not None:
        scores["clap"] = clap.score(captions, generated, sample_rate)
    return scores
