"""The training loop every recipe shares: Adam, an exponential moving average (EMA) of the weights, periodic
validation, resumable state, progress, and DDP through training.distributed.

Resume state is written without pickle: tensors (model, EMA, optimizer moments, every rank's random state) in
`training_state/state.safetensors`, everything else in `training_state/state.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from CMRSynthesisLib.io import atomic_write_bytes

from .distributed import Context, barrier, wrap

LossFunction = Callable[[torch.nn.Module, torch.Generator], torch.Tensor]
Validation = Callable[[torch.nn.Module], dict[str, float]]


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{name}": value for index, entry in state["state"].items()
               for name, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"], "indices": sorted(state["state"])}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {index: {} for index in meta["indices"]}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state[int(index)][name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """Optimises `model` with `loss_fn(model, generator)` for `steps` steps; keeps an EMA copy whose weights are the
    product. `validate(ema_model)` returns metrics; `select` names the one to maximise for the best weights
    (None: keep the last EMA weights)."""

    def __init__(self, model: torch.nn.Module, context: Context, out_dir: Path, *, steps: int, lr: float,
                 ema_decay: float, seed: int, validate_every: int, select: str | None = None) -> None:
        self.context = context
        self.model = model.to(context.device)
        self.trained = wrap(self.model, context)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.steps, self.validate_every, self.select = steps, validate_every, select
        self.state_dir = Path(out_dir) / "training_state"
        self.seed = seed
        self.generator = torch.Generator(device=context.device).manual_seed(seed + 1000 * context.rank)
        self.step = 0
        self.best: dict[str, Any] = {"score": None, "metrics": {}, "step": 0}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []

    def resume(self) -> None:
        """Continue from `training_state/`. Each rank takes back its own random state; if the number of processes
        changed, rank r is reseeded from (seed, r, step) instead."""
        tensors_file, meta_file = self.state_dir / "state.safetensors", self.state_dir / "state.json"
        if not tensors_file.exists():
            raise FileNotFoundError(f"--resume: no training state in {self.state_dir}")
        tensors = load_file(str(tensors_file), device=str(self.context.device))
        meta = json.loads(meta_file.read_text())
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _restore_optimizer(self.optimizer, tensors, meta["optimizer"])
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_weights = best or None
        self.step, self.best, self.history = meta["step"], meta["best"], meta["history"]
        if meta.get("world_size") == self.context.world_size:
            self.generator.set_state(tensors[f"rng.{self.context.rank}"].cpu())
        else:
            self.generator.manual_seed(self.seed + 1000 * self.context.rank + self.step)

    def _random_states(self) -> list[torch.Tensor]:
        """Every rank's generator state (a collective call under DDP)."""
        state = self.generator.get_state()
        if self.context.world_size == 1:
            return [state]
        states: list[Any] = [None] * self.context.world_size
        dist.all_gather_object(states, state)
        return states

    def _save_state(self) -> None:
        random_states = self._random_states()
        if not self.context.is_main:
            return
        optimizer_tensors, optimizer_meta = _optimizer_tensors(self.optimizer)
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                   **{f"ema.{k}": v for k, v in self.ema.state_dict().items()},
                   **optimizer_tensors, **{f"rng.{rank}": state for rank, state in enumerate(random_states)}}
        if self.best_weights is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        atomic_write_bytes(self.state_dir / "state.safetensors",
                           save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
        meta = {"step": self.step, "world_size": self.context.world_size, "optimizer": optimizer_meta,
                "best": self.best, "history": self.history}
        atomic_write_bytes(self.state_dir / "state.json", json.dumps(meta, indent=1).encode())

    def _validate(self, validate: Validation | None, loss: float) -> None:
        metrics = validate(self.ema.module) if validate else {}
        record = {"step": self.step, "train_loss": loss, **metrics}
        self.history.append(record)
        if self.select is not None:
            score = metrics[self.select]
            if self.best["score"] is None or score > self.best["score"]:
                self.best = {"score": score, "metrics": record, "step": self.step}
                self.best_weights = {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}
        else:
            self.best = {"score": None, "metrics": record, "step": self.step}

    def fit(self, loss_fn: LossFunction, validate: Validation | None = None) -> dict[str, torch.Tensor]:
        """Train to `steps`; returns the product weights (best-by-`select` EMA, else the last EMA)."""
        bar = tqdm(total=self.steps, initial=self.step, disable=not self.context.is_main, desc="training",
                   dynamic_ncols=True)
        running, started = None, time.time()
        while self.step < self.steps:
            self.trained.train()
            loss = loss_fn(self.trained, self.generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.ema.update_parameters(self.model)
            self.step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if self.step % self.validate_every == 0 or self.step == self.steps:
                self.ema.module.eval()
                with torch.no_grad():
                    self._validate(validate, running)
                self._save_state()
                barrier(self.context)
        bar.close()
        self.elapsed_s = time.time() - started
        if self.select is not None and self.best_weights is not None:
            return self.best_weights
        return self.ema.module.state_dict()
