"""The training loop every recipe shares: Adam per network, an LR schedule, optional gradient clipping, mixed
precision on CUDA, an exponential moving average (EMA) of the weights and buffers, periodic validation with
best-by-metric selection, exact resume, progress, and DDP through training.distributed.

One network (the classic recipe):

    trainer = Trainer(network, context, out, steps=..., lr=..., ema_decay=..., seed=..., validate_every=...)
    weights = trainer.fit(loss_fn, validate)     # loss_fn(network, generator) -> loss tensor

Several networks, one optimiser each (e.g. an autoencoder and its discriminator): pass a dict of networks; the
step function gets the dict (each network DDP-wrapped under torchrun) and calls `trainer.optimise(name, loss)`
for each network it updates, in the order it wants them updated; it returns a dict of named scalars to log:

    trainer = Trainer({"autoencoder": ae, "discriminator": disc}, context, out, steps=..., lr=..., ...)

    def step(nets, generator):
        images = batch(generator)
        fake = nets["autoencoder"](images)
        g_loss = F.l1_loss(fake, images) + 0.1 * adversarial(nets["discriminator"](fake), real=True)
        trainer.optimise("autoencoder", g_loss)              # generator step first ...
        d_loss = adversarial(nets["discriminator"](fake.detach()), real=False) + \\
                 adversarial(nets["discriminator"](images), real=True)
        trainer.optimise("discriminator", d_loss)            # ... then the discriminator, on detached fakes
        return {"generator": g_loss, "discriminator": d_loss}

    weights = trainer.fit(step, validate)["autoencoder"]    # fit returns {network name: EMA state dict}

`optimise` zeroes that network's gradients, runs the backward pass (loss scaling under fp16), clips, steps its
optimiser and its loss scaler. Gradients the generator loss leaves on the discriminator are discarded by the
discriminator's own `optimise`. Order matters: a loss's backward pass needs the weights its graph used, unchanged,
so step the generator (whose loss goes through the discriminator) before the discriminator, whose loss sees only
detached fakes. A network may be skipped in a step (e.g. the discriminator during a warm-up) or optimised more than
once. The returned dict is logged (running averages "train_loss_<key>" in the history, beside "lr_<network>").
A step function may also call `optimise` with one network and return a dict; a plain loss tensor returned with one
network means "optimise it with this loss", as in the classic recipe.

Settings from the recipe config's "train" section (`training_options`, `Trainer.from_config`):
- "lr" (required): Adam learning rate of every network; "optimisers": {network: {"lr", "betas", "eps",
  "weight_decay"}} overrides it per network (a single network is named "model"), e.g. betas [0.5, 0.9] for a GAN.
- "lr_schedule": "constant" (default: the LR never changes), or {"name": "constant" | "cosine" | "linear",
  "warmup_steps": 0, "final_fraction": 0.0}: linear warm-up from lr / warmup_steps to lr over the first
  warmup_steps steps, then cosine or linear decay to final_fraction x lr at the last step. The LR is a function of
  the step and the total steps, so a run resumed with another "steps" follows another schedule.
- "clip_grad_norm": null (default: no clipping) or the maximum L2 norm of each network's gradients.
- "precision": "fp32" (default), "bf16" or "fp16": autocast of the step function to that type on CUDA (fp16 with a
  loss scaler per optimiser); CPU always trains in fp32 (the value is still checked).
- "ema_decay" (required): EMA decay per step; the EMA averages parameters and floating-point buffers (e.g.
  BatchNorm running statistics; integer buffers are copied) and its weights are the product.
- "seed", "validate_every", "steps" (required): the per-rank random generator's seed (seed + 1000 x rank), how often
  (steps) to validate and save the resume state, and the number of optimiser steps.

Resume state is written without pickle: tensors (networks, EMA, every optimiser's moments, the best weights and
every rank's random states) in `training_state/state.safetensors`, everything else (step, optimiser settings, loss
scalers, history) in `training_state/state.json`. It is saved at every validation; a run resumed from it continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from CMRSynthesisLib.io import atomic_write_bytes

from .distributed import Context, barrier, wrap

LossFunction = Callable[[Any, torch.Generator], "torch.Tensor | Mapping[str, torch.Tensor | float]"]
Validation = Callable[[torch.nn.Module], dict[str, float]]

SINGLE = "model"  # the name of the network (and its optimiser) when the Trainer is given one network
LR_SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMISER_KEYS = ("lr", "betas", "eps", "weight_decay")


# ----------------------------------------------------------------------------------------------- settings
def parse_lr_schedule(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A "lr_schedule" config value as {"name", "warmup_steps", "final_fraction"}; ValueError for a bad value,
    TypeError for neither a name nor a dict. None and "constant" mean a constant LR."""
    if value is None or isinstance(value, str):
        value = {"name": value or "constant"}
    if not isinstance(value, Mapping):
        raise TypeError(f"lr_schedule must be a name or a dict; got {value!r}")
    unknown = set(value) - {"name", "warmup_steps", "final_fraction"}
    if unknown:
        raise ValueError(f"unknown lr_schedule key(s) {sorted(unknown)}; known: name, warmup_steps, final_fraction")
    schedule = {"name": value.get("name", "constant"), "warmup_steps": value.get("warmup_steps", 0),
                "final_fraction": value.get("final_fraction", 0.0)}
    if schedule["name"] not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule['name']!r}; use one of {', '.join(LR_SCHEDULES)}")
    warmup = schedule["warmup_steps"]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"lr_schedule warmup_steps must be a non-negative integer; got {warmup!r}")
    final = schedule["final_fraction"]
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0.0 <= final <= 1.0:
        raise ValueError(f"lr_schedule final_fraction must be a number in [0, 1]; got {final!r}")
    schedule["final_fraction"] = float(final)
    return schedule


def lr_factor(schedule: Mapping[str, Any], step: int, total_steps: int) -> float:
    """The LR multiplier of the update that takes the networks from `step` to `step + 1` (0 <= step < total_steps):
    warm-up (step + 1) / warmup_steps, then 1 for "constant", or a cosine / linear decay from 1 (first step after
    the warm-up) to final_fraction (last step)."""
    warmup, final = schedule["warmup_steps"], schedule["final_fraction"]
    if step < warmup:
        return (step + 1) / warmup
    if schedule["name"] == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(total_steps - 1 - warmup, 1))
    if schedule["name"] == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return final + (1.0 - final) * (1.0 - progress)


def check_precision(value: str) -> str:
    """A "precision" config value: "fp32", "bf16" or "fp16"; ValueError otherwise."""
    if value not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r}; use one of {', '.join(PRECISIONS)}")
    return value


def check_clip(value: float | None) -> float | None:
    """A "clip_grad_norm" config value: None (no clipping) or a positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"clip_grad_norm must be a positive number or null; got {value!r}")
    return float(value)


def check_optimisers(value: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """An "optimisers" config value: {network name: {"lr", "betas", "eps", "weight_decay"}} (all optional);
    ValueError for an unknown setting, TypeError for something other than dicts."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"optimisers must be a dict of network name -> Adam settings; got {value!r}")
    out = {}
    for name, settings in value.items():
        if not isinstance(settings, Mapping):
            raise TypeError(f"optimisers[{name!r}] must be a dict of Adam settings; got {settings!r}")
        unknown = set(settings) - set(OPTIMISER_KEYS)
        if unknown:
            raise ValueError(f"unknown optimiser setting(s) {sorted(unknown)} for {name!r}; known: "
                             f"{', '.join(OPTIMISER_KEYS)}")
        out[name] = {key: tuple(v) if key == "betas" else float(v) for key, v in settings.items()}
    return out


def training_options(train: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer keyword arguments of the optional settings of a config's "train" section, checked:
    lr_schedule, clip_grad_norm, precision, optimisers (see the module docstring). Use as
    `Trainer(..., **training_options(train_cfg))`."""
    return {"lr_schedule": parse_lr_schedule(train.get("lr_schedule")),
            "clip_grad_norm": check_clip(train.get("clip_grad_norm")),
            "precision": check_precision(train.get("precision", "fp32")),
            "optimisers": check_optimisers(train.get("optimisers"))}


def _ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """EMA over lists of tensors (AveragedModel's multi_avg_fn): floating-point tensors move towards the model by
    (1 - decay); integer ones (e.g. BatchNorm's num_batches_tracked) take the model's value."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1]; got {decay!r}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _: Any) -> None:
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:
            for mean, value in zip(averaged, current, strict=True):
                mean.copy_(value)

    return update


# ----------------------------------------------------------------------------------------------- state on disk
def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors named `prefix{param index}.{state name}` + JSON metadata."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "indices": sorted(state["state"]), "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                       prefix: str) -> None:
    state: dict[int, dict[str, Any]] = {index: {} for index in meta["indices"]}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            state[int(index)][name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state[int(index)][name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ----------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Optimises one network, or a dict of named networks with one Adam optimiser each, for `steps` steps; keeps an
    EMA copy whose weights are the product. `fit(fn, validate)`: see the module docstring for `fn`;
    `validate(ema_model)` returns metrics (the EMA network, or a ModuleDict of them); `select` names the metric to
    maximise for the best weights (None: keep the last EMA weights).

    Attributes recipes use: `trained` (the network as trained: DDP-wrapped under torchrun; a dict for several
    networks), `step`, `best`, `history`, `context`, `elapsed_s` (after fit).
    """

    def __init__(self, model: torch.nn.Module | Mapping[str, torch.nn.Module], context: Context, out_dir: Path, *,
                 steps: int, lr: float, ema_decay: float, seed: int, validate_every: int, select: str | None = None,
                 optimisers: Mapping[str, Any] | None = None, lr_schedule: str | Mapping[str, Any] | None = "constant",
                 clip_grad_norm: float | None = None, precision: str = "fp32") -> None:
        self.context = context
        self.several = isinstance(model, (Mapping, torch.nn.ModuleDict))
        if self.several:
            names = list(model)
            if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
                raise ValueError(f"networks need names that are Python identifiers; got {names!r}")
            self.model: torch.nn.Module = torch.nn.ModuleDict(dict(model)).to(context.device)
            self.networks: dict[str, torch.nn.Module] = dict(self.model.items())
            self.trained: Any = {name: wrap(network, context) for name, network in self.networks.items()}
        else:
            self.model = model.to(context.device)
            self.networks = {SINGLE: self.model}
            self.trained = wrap(self.model, context)
        self.ema = AveragedModel(self.model, multi_avg_fn=_ema_update(ema_decay), use_buffers=True)

        settings = check_optimisers(optimisers)
        unknown = set(settings) - set(self.networks)
        if unknown:
            raise ValueError(f"optimiser settings for unknown network(s) {sorted(unknown)}; networks: "
                             f"{', '.join(self.networks)}")
        self.optimizers = {name: torch.optim.Adam(network.parameters(), **{"lr": lr, **settings.get(name, {})})
                           for name, network in self.networks.items()}
        self.base_lr = {name: optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()}
        self.lr_schedule = parse_lr_schedule(lr_schedule)
        self.clip_grad_norm = check_clip(clip_grad_norm)
        check_precision(precision)
        self.precision = precision if context.device.type == "cuda" else "fp32"  # mixed precision on CUDA only
        self.autocast_dtype = PRECISIONS[self.precision]
        if self.autocast_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError("precision 'bf16' needs a GPU with bfloat16 support; use 'fp16' or 'fp32'")
        self.scalers = {name: torch.amp.GradScaler(context.device.type, enabled=self.precision == "fp16")
                        for name in self.networks}

        self.steps, self.validate_every, self.select = steps, validate_every, select
        self.state_dir = Path(out_dir) / "training_state"
        self.seed = seed
        self.generator = torch.Generator(device=context.device).manual_seed(seed + 1000 * context.rank)
        self.step = 0
        self.best: dict[str, Any] = {"score": None, "metrics": {}, "step": 0}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self.running: dict[str, float] = {}
        self._optimised: list[str] = []

    @classmethod
    def from_config(cls, model: torch.nn.Module | Mapping[str, torch.nn.Module], context: Context, out_dir: Path,
                    train: Mapping[str, Any], *, steps: int | None = None, select: str | None = None) -> Trainer:
        """A Trainer with every setting of a config's "train" section (module docstring); `steps` overrides
        train["steps"] (e.g. computed from epochs)."""
        return cls(model, context, out_dir, steps=int(train["steps"]) if steps is None else int(steps),
                   lr=float(train["lr"]), ema_decay=float(train["ema_decay"]), seed=int(train["seed"]),
                   validate_every=int(train["validate_every"]), select=select, **training_options(train))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of a single-network Trainer."""
        if len(self.optimizers) != 1:
            raise AttributeError("this Trainer has several optimisers: use trainer.optimizers[name]")
        return next(iter(self.optimizers.values()))

    # ------------------------------------------------------------------------------------------- one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=self.autocast_dtype)

    def optimise(self, name: str, loss: torch.Tensor) -> torch.Tensor | None:
        """One update of network `name` from `loss`: zero its gradients, backward (scaled under fp16), clip to
        clip_grad_norm, optimiser step, loss-scaler update. Returns the gradient norm before clipping (None when
        clipping is off)."""
        if name not in self.optimizers:
            raise KeyError(f"no network named {name!r}; networks: {', '.join(self.optimizers)}")
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        outside_autocast = (torch.autocast(self.context.device.type, enabled=False)
                            if self.autocast_dtype is not None else contextlib.nullcontext())
        with outside_autocast:
            scaler.scale(loss).backward()
        norm = None
        if self.clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.networks[name].parameters(), self.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        self._optimised.append(name)
        return norm

    def _set_learning_rates(self) -> None:
        factor = lr_factor(self.lr_schedule, self.step, self.steps)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lr[name] * factor

    def _train_step(self, fn: LossFunction) -> dict[str, float]:
        """One training step; returns the step's named losses as floats."""
        self._set_learning_rates()
        for network in (self.trained.values() if self.several else [self.trained]):
            network.train()
        self._optimised = []
        with self._autocast():
            result = fn(self.trained, self.generator)
        if isinstance(result, torch.Tensor):
            if self._optimised or len(self.optimizers) != 1:
                raise RuntimeError("a step function that calls trainer.optimise (or trains several networks) must "
                                   "return a dict of named losses, not a loss tensor")
            self.optimise(next(iter(self.optimizers)), result)
            losses = {"loss": result}
        elif isinstance(result, Mapping):
            if not self._optimised:
                raise RuntimeError("the step function returned a dict of losses but called trainer.optimise for no "
                                   "network: nothing was trained")
            losses = result
        else:
            raise TypeError(f"the step function must return a loss tensor or a dict of losses; got {type(result)}")
        self.ema.update_parameters(self.model)
        self.step += 1
        return {key: float(value.detach().float()) if isinstance(value, torch.Tensor) else float(value)
                for key, value in losses.items()}

    # ------------------------------------------------------------------------------------------- resume
    def resume(self) -> None:
        """Continue from `training_state/`. Each rank takes back its own random states; if the number of processes
        changed, rank r's generator is reseeded from (seed, r, step) instead."""
        tensors_file, meta_file = self.state_dir / "state.safetensors", self.state_dir / "state.json"
        if not tensors_file.exists():
            raise FileNotFoundError(f"--resume: no training state in {self.state_dir}")
        tensors = load_file(str(tensors_file), device="cpu")  # load_state_dict moves each to its place
        meta = json.loads(meta_file.read_text())
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        if "optimizers" in meta:
            missing = set(self.optimizers) - set(meta["optimizers"])
            if missing:
                raise ValueError(f"--resume: the training state in {self.state_dir} has no optimiser for "
                                 f"{sorted(missing)} (it has {sorted(meta['optimizers'])})")
            for name, optimizer in self.optimizers.items():
                _restore_optimizer(optimizer, tensors, meta["optimizers"][name], f"optimizer.{name}.")
                if meta.get("scalers", {}).get(name):
                    self.scalers[name].load_state_dict(meta["scalers"][name])
        else:  # a state written before several optimisers existed: one optimiser, tensors "optimizer.{index}.{name}"
            _restore_optimizer(self.optimizer, tensors, meta["optimizer"], "optimizer.")
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_weights = best or None
        self.step, self.best, self.history = meta["step"], meta["best"], meta["history"]
        self.running = meta.get("running", {})
        rank = self.context.rank
        if meta.get("world_size") == self.context.world_size:
            self.generator.set_state(tensors[f"rng.{rank}"].cpu())
            if f"torch_rng.{rank}" in tensors:
                torch.set_rng_state(tensors[f"torch_rng.{rank}"].cpu())
            if f"cuda_rng.{rank}" in tensors and self.context.device.type == "cuda":
                torch.cuda.set_rng_state(tensors[f"cuda_rng.{rank}"].cpu(), self.context.device)
        else:
            self.generator.manual_seed(self.seed + 1000 * rank + self.step)

    def _random_states(self) -> list[dict[str, torch.Tensor]]:
        """Every rank's random states: its generator, torch's global CPU generator and (on CUDA) the device's global
        generator, which dropout and random transforms use (a collective call under DDP)."""
        state = {"rng": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.context.device)
        if self.context.world_size == 1:
            return [state]
        states: list[Any] = [None] * self.context.world_size
        dist.all_gather_object(states, state)
        return states

    def _save_state(self) -> None:
        random_states = self._random_states()
        if not self.context.is_main:
            return
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                   **{f"ema.{k}": v for k, v in self.ema.state_dict().items()}}
        optimizers = {}
        for name, optimizer in self.optimizers.items():
            optimizer_tensors, optimizers[name] = _optimizer_tensors(optimizer, f"optimizer.{name}.")
            tensors.update(optimizer_tensors)
        for rank, states in enumerate(random_states):
            tensors.update({f"{kind}.{rank}": value for kind, value in states.items()})
        if self.best_weights is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        atomic_write_bytes(self.state_dir / "state.safetensors",
                           save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
        meta = {"step": self.step, "steps": self.steps, "world_size": self.context.world_size,
                "optimizers": optimizers, "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
                "lr_schedule": self.lr_schedule, "precision": self.precision, "running": self.running,
                "best": self.best, "history": self.history}
        atomic_write_bytes(self.state_dir / "state.json", json.dumps(meta, indent=1).encode())

    # ------------------------------------------------------------------------------------------- fit
    def _validate(self, validate: Validation | None) -> None:
        metrics = validate(self.ema.module) if validate else {}
        if self.several:
            record = {"step": self.step, **{f"train_loss_{k}": v for k, v in self.running.items()},
                      **{f"lr_{name}": o.param_groups[0]["lr"] for name, o in self.optimizers.items()}, **metrics}
        else:
            record = {"step": self.step, "train_loss": self.running.get("loss"),
                      "lr": self.optimizer.param_groups[0]["lr"], **metrics}
        self.history.append(record)
        if self.select is not None:
            score = metrics[self.select]
            if self.best["score"] is None or score > self.best["score"]:
                self.best = {"score": score, "metrics": record, "step": self.step}
                self.best_weights = {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}
        else:
            self.best = {"score": None, "metrics": record, "step": self.step}

    def _product(self, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
        if not self.several:
            return weights
        return {name: {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(f"{name}.")}
                for name in self.networks}

    def fit(self, loss_fn: LossFunction, validate: Validation | None = None) -> dict[str, Any]:
        """Train to `steps`; returns the product weights (best-by-`select` EMA, else the last EMA): a state dict,
        or for several networks a dict {network name: state dict}."""
        bar = tqdm(total=self.steps, initial=self.step, disable=not self.context.is_main, desc="training",
                   dynamic_ncols=True)
        started = time.time()
        while self.step < self.steps:
            losses = self._train_step(loss_fn)
            for key, value in losses.items():
                self.running[key] = value if key not in self.running else 0.98 * self.running[key] + 0.02 * value
            bar.update(1)
            bar.set_postfix({key: f"{value:.4f}" for key, value in self.running.items()})
            if self.step % self.validate_every == 0 or self.step == self.steps:
                self.ema.module.eval()
                with torch.no_grad():
                    self._validate(validate)
                self._save_state()
                barrier(self.context)
        bar.close()
        self.elapsed_s = time.time() - started
        if self.select is not None and self.best_weights is not None:
            return self._product(self.best_weights)
        return self._product(self.ema.module.state_dict())
