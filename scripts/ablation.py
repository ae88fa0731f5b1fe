"""Ablation of the fer2013-effnet-b0 recipe at a reduced budget, scored on PublicTest.

    python scripts/ablation.py --data ../shared/data/fer2013 --out ~/fer-runs/runs --epochs 6

Trains the preset with a shorter schedule (every epoch with the full augmentation: no clean
epochs), then once per variant with one ingredient changed:
no mixup, no label smoothing, no class weights, and gradual unfreezing switched on (the preset
trains every stage from the first step: from random initialisation there are no pretrained
features for unfreezing to protect). Runs are named ``ablation-<variant>``; finished ones are
skipped and stopped ones resumed, so the script can be run again after an interruption. Prints a
Markdown table (scripts/compare_runs.py) at the end.

``--model resnet18`` trains the same variants, budget and settings with another architecture (runs
``ablation-<variant>-resnet18``): with ``--only recipe`` it is the architecture comparison.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_core import MODEL_NAMES, PRESETS, RunStore, TrainConfig, train  # noqa: E402
from scripts.compare_runs import markdown_table, summarise  # noqa: E402

PRESET = "fer2013-effnet-b0"
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "no-mixup": {"mixup_alpha": 0.0},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "no-class-weights": {"class_weight_power": 0.0},
    "gradual-unfreezing": {"unfreeze_head_epochs": 1, "unfreeze_every": 1},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs", help="runs folder")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants only")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help="another architecture (default: the preset's)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    store = RunStore(args.out)
    done = []
    model = args.model or PRESETS[PRESET]["model"]
    suffix = "" if model == PRESETS[PRESET]["model"] else f"-{model}"
    for name in args.only or VARIANTS:
        run_id = f"ablation-{name}{suffix}"
        path = Path(args.out) / run_id
        if (path / "config.json").exists():
            if store.get(path).status().get("state") != "finished":
                train(resume=path, progress=False)
        else:
            config = TrainConfig.from_preset(PRESET, data=args.data, epochs=args.epochs, warmup_epochs=1,
                                             clean_epochs=0, threads=args.threads, model=model,
                                             **VARIANTS[name])
            train(config, runs_root=args.out, run_id=run_id, progress=False)
        done.append(str(path))
    print(markdown_table([summarise(p) for p in done]))


if __name__ == "__main__":
    main()
