"""Average the weights of checkpoints of one model (a uniform "model soup"), into a new checkpoint.

The checkpoints must share architecture, classes and input size, and should be fine-tuned from the same
start (averaging unrelated models gives noise). ``PATH#ema`` takes the EMA weights that a run's
``last.safetensors`` keeps in its training state instead of its raw weights.

    python scripts/average_checkpoints.py OUT.safetensors RUN_A/best.safetensors RUN_B/best.safetensors \
        RUN_A/last.safetensors#ema [--half]

Then choose between the soup and its ingredients on the validation split (PublicTest), e.g. with
``python -m fer_core evaluate --checkpoint OUT.safetensors --data PATH --split PublicTest``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_core.checkpoint import ema_weights, read_tensors, save_checkpoint  # noqa: E402
from fer_core.storage import CheckpointError, model_metadata, read_metadata  # noqa: E402

MUST_MATCH = ("arch", "class_names", "img_size", "in_chans", "output_stride", "mean", "std")


def weights_of(spec: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The model weights named by ``PATH`` or ``PATH#ema``, and the file's metadata."""
    path, _, part = spec.partition("#")
    if part not in ("", "ema"):
        raise CheckpointError(f"{spec}: after '#' only 'ema' is known")
    meta = read_metadata(path)
    model, train_state = read_tensors(path)
    if part == "ema":
        model = ema_weights(train_state)
        if not model:
            raise CheckpointError(f"{path} keeps no EMA weights (only a run's last checkpoint does, with EMA on)")
    return model, meta


def average(specs: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The mean of the checkpoints' float tensors (integer buffers from the first) and the new metadata."""
    states, metas = zip(*(weights_of(s) for s in specs))
    first, first_meta = states[0], metas[0]
    for spec, state, meta in zip(specs[1:], states[1:], metas[1:]):
        differ = [k for k in MUST_MATCH if meta.get(k) != first_meta.get(k)]
        if differ:
            raise CheckpointError(f"{spec} differs from {specs[0]} in {', '.join(differ)}")
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise CheckpointError(f"{spec} has other tensors than {specs[0]}")
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in first.items()}
    meta = model_metadata(first_meta["arch"], first_meta["class_names"], first_meta["img_size"],
                          first_meta["mean"][0], first_meta["std"][0], first_meta["output_stride"],
                          first_meta["drop_rate"], first_meta.get("config"))
    meta["averaged_from"] = json.dumps(list(specs))
    return mean, meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the averaged checkpoint to write (.safetensors)")
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints, PATH or PATH#ema")
    p.add_argument("--half", action="store_true", help="store the weights in float16")
    args = p.parse_args()
    if len(args.checkpoints) < 2:
        p.error("give two or more checkpoints")
    try:
        state, meta = average(args.checkpoints)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    save_checkpoint(args.out, state, meta, half=args.half)
    print(f"wrote {args.out}: the mean of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
