"""Where a run stands, and the ``last`` checkpoint that carries it: model weights, optimizer moments, EMA
weights, the augmentation generator and the progress record, so a stopped or killed run resumes exactly."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import EMA_PREFIX, ema_weights, read_tensors, save_checkpoint
from ..storage import CheckpointError, read_metadata


@dataclass
class EpochTotals:
    """Running training figures of one epoch (kept in ``last`` when a run stops part-way through it)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def add(self, loss: float, correct: int, seen: int) -> None:
        self.loss_sum += loss * seen
        self.correct += correct
        self.seen += seen

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)


@dataclass
class TrainState:
    """The progress record: epochs and batches done, optimizer steps, the best score so far."""

    epoch: int = 0                      # epochs completed
    batch: int = 0                      # batches of epoch ``epoch`` done (a stop mid-epoch)
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    since_best: int = 0
    partial: EpochTotals | None = None  # the stopped epoch's running figures
    guard: dict = field(default_factory=dict)

    def select(self, score: float, epoch: int) -> bool:
        """Record epoch ``epoch`` (1-based)'s validation score; True when it is the best so far."""
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self.since_best = score, epoch, 0
            return True
        self.since_best += 1
        return False

    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        record["partial"] = dataclasses.asdict(self.partial) if self.partial else None
        return json.dumps(record)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        record = json.loads(text)
        partial = record.pop("partial", None)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known},
                   partial=EpochTotals(**partial) if partial else None)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer's state as flat tensors (``optim.<param>.<name>``) and its JSON-able parameter groups."""
    sd = opt.state_dict()
    tensors = {f"optim.{idx}.{k}": torch.as_tensor(v) for idx, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_last(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema, rng: torch.Generator,
              state: TrainState, metadata: dict[str, str]) -> None:
    tensors, groups = optimizer_tensors(optimizer)
    tensors["rng"] = rng.get_state()
    if ema is not None:
        tensors.update({EMA_PREFIX + k: v for k, v in ema.module.state_dict().items()})
    meta = {**metadata, "optimizer_groups": json.dumps(groups), "progress": state.to_json()}
    save_checkpoint(path, model.state_dict(), meta, tensors)


def load_last(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema,
              rng: torch.Generator | None) -> TrainState:
    """Restore model, optimizer, EMA and (``rng`` given) the generator from ``path``; the progress record.
    A ``last`` whose training state does not fit this run is a ``CheckpointError`` naming the file."""
    meta = read_metadata(path)
    model_state, train_state = read_tensors(path)
    try:
        model.load_state_dict(model_state)
        load_optimizer(optimizer, train_state, json.loads(meta["optimizer_groups"]))
        saved_ema = ema_weights(train_state)
        if ema is not None and saved_ema:
            ema.module.load_state_dict(saved_ema)
        if rng is not None:
            rng.set_state(train_state["rng"])
        return TrainState.from_json(meta["progress"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:   # missing, malformed or mismatched state
        raise CheckpointError(f"{path}: its training state cannot be resumed ({type(e).__name__}); start a new "
                              "run") from None
