"""PEFT training of the condition adaptor on prepared clips; MusicGen itself stays frozen.

The recipe is the authors' (docs/training.md): AdamW (lr 1e-2, weight decay 0.02), linear
warm-up for 2 epochs then cosine to 1e-4, gradient-norm clip 0.1, fp16 autocast on CUDA,
cross-entropy over the 4 codebooks laid out in the delay pattern, 10 s segments, and
condition dropout: each piece's caption is dropped (the null text of guidance's second
half) with `text_dropout`, so the adaptor is trained for both halves of CFG.

Windows: by default each batch is cut to one window the live engine makes
(`conditioning.session_windows`: the stream's growth, slides and a conductor's chunk
lengths), so the adaptor meets in training exactly the windows it plays under.
What it was trained under is recorded in its adaptor.json (`ConditionAdaptor.trained`).

Resuming: `trainer_state.pt` in the run folder holds everything needed to continue
(adaptor weights, optimiser moments, position in the epoch, loss history). It is
rewritten atomically every `save_every` steps and at each epoch's end, and on SIGINT /
SIGTERM after the current step; a restarted run loads it and skips the batches already
done, so a kill costs at most the steps since the last save. Data order is a function
of (seed, epoch) only, which is what makes skipping exact.

Deliverables in the run folder: `adaptor.safetensors` + `adaptor.json` (the latest
epoch), `best/` (lowest validation loss) and `curves.png`. Beside each adaptor,
`clips.json` names the clips it was trained and validated on, so `evaluate` can refuse
to score it on any of them as test clips.

Multi-GPU: launched by `torchrun`, each process reads RANK / WORLD_SIZE / LOCAL_RANK,
joins the process group (NCCL on CUDA, gloo on CPU), takes every WORLD_SIZE-th batch,
and DDP averages the adaptor's gradients. Only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path, write_json
from ..engine.scheduler import ChunkTiming
from ..model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor, trainable_share
from ..model.conditioning import StreamLayout, recorded_settings, session_windows
from ..model.decoder import fused_attention
from ..model.delay_pattern import DelayPattern
from ..model.text import TextCondition
from ..settings import GenerationSettings
from .config import TrainConfig
from .curves import plot_curves
from .dataset import CachedClip, Segment, cut, segments

STATE_FILE = "trainer_state.pt"
CLIPS_FILE = "clips.json"


def seen_clips(adaptor_path: str | os.PathLike) -> set[str]:
    """The clips an adaptor checkpoint was trained or validated on (empty for one saved without `clips.json`)."""
    path = Path(adaptor_path)
    folder = path.parent if path.suffix == ".safetensors" else path
    try:
        seen = json.loads((folder / CLIPS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainingError(f"{folder / CLIPS_FILE} cannot be read ({err})") from None
    return set(seen["train"]) | set(seen["val"])


class TrainingError(ValueError):
    """A training run that cannot start or continue; the message says what to do."""


@dataclass(frozen=True)
class Batch:
    face: torch.Tensor      # (B, T, FACE_DIM)
    motion: torch.Tensor    # (B, T, MOTION_DIM)
    flow: torch.Tensor      # (B, T, *FLOW_SHAPE)
    codes: torch.Tensor     # (B, K, T) long
    captions: list[str]
    first: int = 0          # decoder position of the windows' frame 0 (Segment.first)


def make_batch(clips: list[CachedClip], segs: list[Segment], default_caption: str, device,
               captions: bool = True) -> Batch:
    """Stack segments of memory-mapped clips into tensors on `device`; `captions=False`: all on `default_caption`."""
    def stack(key: str) -> torch.Tensor:
        arrays = [np.asarray(getattr(clips[s.clip], key)[s.window]) for s in segs]
        return torch.from_numpy(np.stack(arrays).astype(np.float32)).to(device)

    codes = np.stack([np.asarray(clips[s.clip].codes[:, s.start:s.start + s.length]) for s in segs])
    return Batch(face=stack("face"), motion=stack("motion"), flow=stack("flow"),
                 codes=torch.from_numpy(codes.astype(np.int64)).to(device),
                 captions=[(captions and clips[s.clip].caption) or default_caption for s in segs],
                 first=segs[0].first)


def delayed_cross_entropy(decoder: nn.Module, codes: torch.Tensor, text, adapters) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over the 4 codebooks in the delay pattern, and the token count.

    The decoder reads the delayed sequence without its last position and predicts it
    shifted by one; pad places (before a codebook starts, after it ends) are not scored.
    """
    B, K, T = codes.shape
    pad = decoder.config.pad_token_id
    seq = DelayPattern(K, T, pad, device=codes.device).build(codes)     # (B, K, T+K)
    logits = decoder(seq[..., :-1], text, adapters, attend=fused_attention)   # (B, K, T+K-1, V)
    targets = seq[..., 1:]                                              # (B, K, T+K-1)
    V = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=pad, reduction="sum")
    return loss, (targets != pad).sum()


class AdaptedLoss(nn.Module):
    """The adaptor plus its loss as one module, so DDP can wrap the forward it synchronises."""

    def __init__(self, adaptor: ConditionAdaptor):
        super().__init__()
        self.adaptor = adaptor

    def forward(self, batch: Batch, text) -> tuple[torch.Tensor, torch.Tensor]:
        adapters = self.adaptor.adapters(batch.face, batch.motion, batch.flow, first=batch.first)
        return delayed_cross_entropy(self.adaptor.decoder, batch.codes, text, adapters)


def learning_rate(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine down to `min_lr` at `total`."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


@dataclass
class Distributed:
    """This process's place in a `torchrun` launch (rank 0 of 1 when run directly)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """All-reduce sums across processes (identity for a single process)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        packed = torch.stack([v.detach().double() for v in values])
        dist.all_reduce(packed)
        return list(packed.unbind())


@dataclass
class TrainResult:
    epochs_done: int
    global_step: int
    interrupted: bool
    base_val_loss: float | None
    val_losses: list[float]
    out_dir: Path


class Trainer:
    """Trains a `ConditionAdaptor` on `train_clips`, validating on `val_clips`, into `out_dir`."""

    def __init__(self, musicgen, train_clips: list[CachedClip], val_clips: list[CachedClip], out_dir: str | os.PathLike,
                 config: TrainConfig = TrainConfig(), adaptor_config: AdaptorConfig = AdaptorConfig(),
                 device="cpu", log: Callable[[str], None] = print, progress: bool = True,
                 generation: GenerationSettings | None = None, features: dict | None = None):
        """`generation`: the live settings whose windows `config.live_windows` trains on (None: defaults);
        `features`: the feature settings the clips were prepared with (the cache index's "tracking")."""
        self.musicgen = musicgen
        self.decoder = musicgen.decoder.eval().requires_grad_(False)
        self.config = config
        self.device = torch.device(device)
        self.out_dir = Path(out_dir)
        self.dist = Distributed.from_env(self.device)
        self.log = log if self.dist.main else (lambda message: None)
        self.progress = progress and self.dist.main
        self.train_clips, self.val_clips = train_clips, val_clips

        self.segment_frames = round(config.segment_seconds * musicgen.frame_rate)
        self.train_segments = segments(train_clips, self.segment_frames)
        self.val_segments = segments(val_clips, self.segment_frames)
        per_step = config.batch_size * self.dist.world
        self.steps_per_epoch = len(self.train_segments) // per_step
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.train_segments)} training segments of {config.segment_seconds:g} s are "
                                f"fewer than one step of {per_step}: lower --batch-size or --segment-seconds, "
                                f"or add clips")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = max(1, round(config.warmup_epochs * self.steps_per_epoch))

        self.state = self._load_state()
        if self.state is not None:
            adaptor_config = AdaptorConfig.from_json(self.state["adaptor_config"])
        generation = generation or GenerationSettings()
        self.windows = self._live_windows(generation, adaptor_config) if config.live_windows else None
        if self.windows is None and adaptor_config.max_frames < self.segment_frames:
            raise TrainingError(f"segments of {self.segment_frames} frames exceed the adaptor's window of "
                                f"{adaptor_config.max_frames} frames: lower --segment-seconds")
        torch.manual_seed(config.seed)
        self.adaptor = ConditionAdaptor(adaptor_config, self.decoder).to(self.device)
        self.adaptor.trained = {"windows": "live" if config.live_windows else "paper",
                                "text_dropout": config.text_dropout,
                                **recorded_settings(generation, features or {})}
        self.model = AdaptedLoss(self.adaptor)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(self.adaptor.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self._stop_signal: int | None = None
        self._text_cache: dict[str, object] = {}

    # --- state -----------------------------------------------------------------------

    def _load_state(self) -> dict | None:
        path = self.out_dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a corrupt state must not be silently overwritten
            raise TrainingError(f"cannot read {path} ({err}); move it away to start a new run") from None
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise TrainingError(f"{path} was written with {state['steps_per_epoch']} steps per epoch, this run has "
                                f"{self.steps_per_epoch}: use the same data, --batch-size and --segment-seconds, "
                                f"or a new --out folder")
        return state

    def _save_state(self, epoch: int, step_in_epoch: int, global_step: int, history: dict) -> None:
        if not self.dist.main:
            return
        state = {
            "adaptor_config": self.adaptor.config.to_json(),
            "adaptor": self.adaptor.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "history": history,
            "train_config": dataclasses.asdict(self.config),
        }
        with atomic_path(self.out_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)

    # --- pieces ------------------------------------------------------------------------

    def _text(self, captions: list[str]):
        """T5 conditions for `captions`, encoded once per distinct caption (T5 is frozen)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if missing:
            encoded = self.musicgen.encode_text(missing)
            for i, caption in enumerate(missing):
                self._text_cache[caption] = (encoded.hidden[i], encoded.mask[i])
        hidden = [self._text_cache[c][0] for c in captions]
        masks = [self._text_cache[c][1] for c in captions]
        width = max(h.shape[0] for h in hidden)
        hidden = torch.stack([F.pad(h, (0, 0, 0, width - h.shape[0])) for h in hidden])   # (B, S, D)
        mask = torch.stack([F.pad(m, (0, width - m.shape[0])) for m in masks])            # (B, S)
        return TextCondition(hidden.to(self.device), mask.to(self.device))

    def _dropped(self, text: TextCondition, step: int) -> TextCondition:
        """Condition dropout: each piece's text replaced, with `text_dropout`, by guidance's null text
        (`TextCondition.with_null`'s second half); drawn from (seed, step), so a resumed run draws the same."""
        p = self.config.text_dropout
        if p <= 0:
            return text
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        keep = (torch.rand(text.hidden.shape[0], generator=generator) >= p).to(self.device)   # (B,)
        return TextCondition(text.hidden * keep[:, None, None].to(text.hidden.dtype),
                             text.mask * keep[:, None].to(text.mask.dtype))

    def _live_windows(self, generation: GenerationSettings, adaptor_config: AdaptorConfig):
        """The live engine's windows under `generation` (conditioning.session_windows), checked to fit."""
        rate, K = self.musicgen.frame_rate, self.decoder.config.num_codebooks
        timing = ChunkTiming.from_settings(generation, self.musicgen.sample_rate)
        layout = StreamLayout(round(generation.window_seconds * rate), timing.context_frames, K)
        if layout.window > adaptor_config.max_frames:
            raise TrainingError(f"generation.window_seconds {generation.window_seconds:g} exceeds the adaptor's "
                                f"{adaptor_config.max_frames / rate:g} s of positions: lower it")
        windows = session_windows(layout, timing.first_chunk_frames, timing.chunk_frames, adaptor_config.max_frames,
                                  seed=self.config.seed)
        need = max(window.footprint() for window in windows)
        if need > self.segment_frames:
            raise TrainingError(f"live windows (generation.window_seconds {generation.window_seconds:g}, "
                                f"context_seconds {generation.context_seconds:g}) need pieces of {need / rate:g} s: "
                                f"raise --segment-seconds to {need / rate:g}, or train the paper's way "
                                f"with --paper-windows")
        return windows

    def _shaped(self, batches: list[list[Segment]], generator: torch.Generator | None = None) -> list[list[Segment]]:
        """With live windows, each batch cut to one live window (one per batch), drawn with
        `generator`, or without one in turn (validation: the same windows every time)."""
        if self.windows is None:
            return batches
        n = len(self.windows)
        picks = (range(len(batches)) if generator is None
                 else torch.randint(n, (len(batches),), generator=generator).tolist())
        return [[cut(self.windows[i % n], s) for s in batch] for batch, i in zip(batches, picks)]

    def _epoch_order(self, epoch: int) -> list[list[Segment]]:
        """This process's batches for `epoch`: order and live windows fixed by (seed, epoch), split across ranks."""
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_segments), generator=generator).tolist()
        B = self.config.batch_size
        batches = [[self.train_segments[i] for i in order[j * B:(j + 1) * B]]
                   for j in range(self.steps_per_epoch * self.dist.world)]
        return self._shaped(batches, generator)[self.dist.rank::self.dist.world]

    def _batch(self, clips: list[CachedClip], segs: list[Segment]) -> Batch:
        return make_batch(clips, segs, self.config.default_caption, self.device, self.adaptor.config.captions)

    @torch.no_grad()
    def validation_loss(self, with_adaptor: bool = True) -> float | None:
        """Mean cross-entropy per token on this process's share of the validation segments, all-reduced."""
        if not self.val_segments:
            return None
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        B = self.config.batch_size
        mine = self.val_segments[self.dist.rank::self.dist.world]
        batches = [mine[j:j + B] for j in range(0, len(mine), B)]
        for segs in self._shaped(batches):
            batch = self._batch(self.val_clips, segs)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                adapters = (self.adaptor.adapters(batch.face, batch.motion, batch.flow, first=batch.first)
                            if with_adaptor else None)
                loss, n = delayed_cross_entropy(self.decoder, batch.codes, self._text(batch.captions), adapters)
            total += loss.double()
            count += n.double()
        total, count = self.dist.sum(total, count)
        return float(total / count)

    def _stop(self, signum, frame) -> None:
        self._stop_signal = signum

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> TrainResult:
        own, frozen, share = trainable_share(self.adaptor)
        self.log(f"trainable parameters: {own:,} ({share:.2f}% of decoder + adaptor; "
                 f"{frozen:,} frozen decoder parameters)")
        if self.state is not None:
            self.adaptor.load_state_dict(self.state["adaptor"])
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scaler.load_state_dict(self.state["scaler"])
            epoch, step_in_epoch, global_step = (self.state[k] for k in ("epoch", "step_in_epoch", "global_step"))
            history = self.state["history"]
            self.log(f"resuming {self.out_dir} at epoch {epoch + 1}, step {step_in_epoch} of "
                     f"{self.steps_per_epoch} (global step {global_step})")
        else:
            epoch, step_in_epoch, global_step = 0, 0, 0
            history = {"train": [], "val": [], "base_val": self.validation_loss(with_adaptor=False)}
            if history["base_val"] is not None:
                self.log(f"validation CE of the base model without adaptor: {history['base_val']:.4f}")
        if epoch >= self.config.epochs:
            self.log(f"{self.out_dir} already finished {epoch} epochs; raise --epochs to train further")
            return self._result(epoch, global_step, False, history)

        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while epoch < self.config.epochs:
                global_step = self._train_epoch(epoch, step_in_epoch, global_step, history)
                if self._stop_signal is not None:
                    return self._result(epoch, global_step, True, history)
                epoch, step_in_epoch = epoch + 1, 0
                self._end_epoch(epoch, global_step, history)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self._result(epoch, global_step, False, history)

    def _train_epoch(self, epoch: int, start: int, global_step: int, history: dict) -> int:
        from tqdm import tqdm

        batches = self._epoch_order(epoch)
        self.adaptor.train()
        bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   disable=not self.progress, leave=False)
        for step_in_epoch in range(start, len(batches)):
            lr = learning_rate(global_step, self.total_steps, self.warmup_steps, self.config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = self._batch(self.train_clips, batches[step_in_epoch])
            text = self._dropped(self._text(batch.captions), global_step)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                loss_sum, n = self.model(batch, text)
                loss = loss_sum / n
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.adaptor.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            global_step += 1
            history["train"].append((global_step, loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{history['train'][-1][1]:.3f}", lr=f"{lr:.2e}")
            done = step_in_epoch + 1
            if self._stop_signal is not None or (self.config.save_every and done % self.config.save_every == 0 and done < len(batches)):
                self._save_state(epoch, done, global_step, history)
            if self._stop_signal is not None:
                self.log(f"stopped by signal {self._stop_signal} after step {done} of epoch {epoch + 1}; "
                         f"run the same command again to resume")
                break
        bar.close()
        return global_step

    def _end_epoch(self, epochs_done: int, global_step: int, history: dict) -> None:
        started = time.monotonic()
        val = self.validation_loss()
        recent = [loss for _, loss in history["train"][-self.steps_per_epoch:]]
        message = f"epoch {epochs_done}/{self.config.epochs}: train CE {np.mean(recent):.4f}"
        if val is not None:
            best = min((loss for _, loss in history["val"]), default=math.inf)
            history["val"].append((global_step, val))
            message += f", validation CE {val:.4f}"
            if history["base_val"] is not None:
                message += f" (base model {history['base_val']:.4f})"
            if val < best and self.dist.main:
                self._save_adaptor(self.out_dir / "best")
        self.log(message + f" [{time.monotonic() - started:.1f} s validation]")
        if self.dist.main:
            self._save_adaptor(self.out_dir)
            plot_curves(history, self.out_dir / "curves.png")
        self._save_state(epochs_done, 0, global_step, history)

    def _save_adaptor(self, folder: Path) -> None:
        save_adaptor(self.adaptor, folder)
        write_json(folder / CLIPS_FILE, {"train": [c.name for c in self.train_clips],
                                         "val": [c.name for c in self.val_clips]})

    def _result(self, epoch: int, global_step: int, interrupted: bool, history: dict) -> TrainResult:
        return TrainResult(epochs_done=epoch, global_step=global_step, interrupted=interrupted,
                           base_val_loss=history["base_val"], val_losses=[loss for _, loss in history["val"]],
                           out_dir=self.out_dir)
