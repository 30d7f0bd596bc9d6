"""The training recipe as one frozen dataclass (kept free of torch so the CLI can show its defaults)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20                    # paper: 20-40 epochs (stopped at 40 against overfitting)
    batch_size: int = 10                # segments per step per process (paper: 10 per GPU)
    lr: float = 1e-2                    # AdamW peak learning rate (authors)
    min_lr: float = 1e-4                # cosine floor (authors)
    weight_decay: float = 0.02          # AdamW (authors)
    warmup_epochs: float = 2.0          # linear warm-up before the cosine (authors)
    grad_clip: float = 0.1              # gradient-norm clip (authors)
    segment_seconds: float = 10.0       # training piece length (paper: 10 s clips)
    live_windows: bool = True           # each batch cut to one live window (conditioning.session_windows); off: the paper's
    text_dropout: float = 0.2           # condition dropout: captions dropped to guidance's null text (audiocraft's 0.2)
    val_fraction: float = 0.1           # share of clips held out for the validation loss
    seed: int = 0                       # split, initialisation and data order
    save_every: int = 50                # steps between resumable checkpoints inside an epoch; 0 = epoch ends only
    amp: bool = True                    # fp16 autocast + loss scaling on CUDA (ignored on CPU)
    default_caption: str = "music with catchy melody"  # for clips without caption.txt (paper's generic prompt)
