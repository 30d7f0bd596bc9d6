"""What a whole `generate` command costs per second of music: ours against transformers', side by side.

Each side runs as its own process, as a user runs it: load MusicGen, encode the prompt,
generate with CFG 3 and top-k 250, decode with EnCodec and write a WAV. Runs of 1 s and
5 s alternate (ours, theirs, ours, theirs, ...), and the cost per audio second is the
difference between them over the 4 s they differ by, so loading and start-up cancel out.
Median over `--rounds`.

    python bench/generate.py [--model DIR] [--rounds 3] [--json out/bench_generate.json]
    expotion-live bench generate ...
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import write_json  # noqa: E402

PROMPT = "warm electronic groove with soft pads"
SHORT, LONG = 1.0, 5.0

# transformers' own generate, the way its documentation runs MusicGen, writing the same WAV
THEIRS = """
import sys, soundfile, torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration
model_dir, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
model = MusicgenForConditionalGeneration.from_pretrained(model_dir).eval()
inputs = AutoProcessor.from_pretrained(model_dir)(text=[{prompt!r}], padding=True, return_tensors="pt")
with torch.no_grad():
    audio = model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0,
                           max_new_tokens=round(seconds * model.config.audio_encoder.frame_rate) + 3)
soundfile.write(out, audio[0, 0].numpy(), model.config.audio_encoder.sampling_rate)
""".format(prompt=PROMPT)


def command(side: str, model_dir: Path, seconds: float, out: Path) -> list[str]:
    if side == "ours":
        return [sys.executable, str(REPO / "main.py"), "generate", "--model", str(model_dir), "--prompt", PROMPT,
                "--seconds", str(seconds), "--cfg", "3", "--top-k", "250", "--out", str(out)]
    return [sys.executable, "-c", THEIRS, str(model_dir), str(seconds), str(out)]


def timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/generate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a MusicGen directory (default: a random musicgen-small)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each side and length")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from expotion_live.testing.random_musicgen import save_random_musicgen

            print("building a random musicgen-small ...", flush=True)
            model_dir = save_random_musicgen(Path(tmp) / "small", preset="small", seed=0)
        walls: dict[tuple[str, float], list[float]] = {}
        for r in range(args.rounds):
            for seconds in (SHORT, LONG):
                for side in ("ours", "transformers"):
                    wall = timed(command(side, model_dir, seconds, Path(tmp) / f"{side}.wav"))
                    walls.setdefault((side, seconds), []).append(wall)
                    print(f"round {r + 1}: {side} {seconds:g} s -> {wall:.1f} s", flush=True)
    per_second = {side: statistics.median(l - s for l, s in zip(walls[(side, LONG)], walls[(side, SHORT)]))
                  / (LONG - SHORT) for side in ("ours", "transformers")}
    print(f"\nwhole `generate` command, CFG 3, top-k 250, {args.rounds} alternating rounds (median)")
    print(f"{'implementation':<14}{'1 s run s':>10}{'5 s run s':>10}{'s per audio s':>15}{'x faster':>10}")
    for side in ("transformers", "ours"):
        print(f"{side:<14}{statistics.median(walls[(side, SHORT)]):>10.1f}{statistics.median(walls[(side, LONG)]):>10.1f}"
              f"{per_second[side]:>15.2f}{per_second['transformers'] / per_second[side]:>10.2f}")
    if args.json:
        write_json(args.json, {"walls": {f"{k[0]} {k[1]:g}": v for k, v in walls.items()},
                               "seconds_per_audio_second": per_second})
    return 0


if __name__ == "__main__":
    sys.exit(main())
