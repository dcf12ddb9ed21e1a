"""Train a checkpoint: `python -m training RECIPE --config CONFIG.json --out FOLDER [--resume] [--device ...]`,
or under torchrun for several GPUs: `torchrun --nproc_per_node 4 -m training RECIPE ...`.
`python -m training list` lists the recipes (every module of training/recipes, found by discovery).
`python -m training manifest FOLDER` rewrites FOLDER/manifest.json (sha256 of every checkpoint in it)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from CMRSynthesisLib.checkpoints import save_checkpoint, write_manifest

from .distributed import setup, teardown
from .recipes import discover, summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipes = discover()
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=[*recipes, "list", "manifest"])
    parser.add_argument("folder", nargs="?", help="for 'manifest': the checkpoint root")
    parser.add_argument("--config", type=Path, help="recipe config JSON (see training/configs)")
    parser.add_argument("--out", type=Path, help="checkpoint folder to write")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/training_state")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--seed", type=int, help="training seed instead of the config's train.seed (another seed of "
                        "the same recipe: network initialisation, batches and noise; the examples stay the same)")
    parser.add_argument("--steps", type=int, help="optimiser steps instead of the config's train.steps (another "
                        "budget of the same recipe, e.g. on a GPU; the LR schedule follows the new total)")
    parser.add_argument("--batch-size", type=int, help="examples per optimiser step instead of the config's "
                        "train.batch_size (per rank under torchrun)")
    parser.add_argument("--render-workers", type=int, help="processes that render the phantom examples (default 1; "
                        "the same examples, subject by subject in order)")
    args = parser.parse_args(argv)
    if args.recipe == "list":
        for name, function in recipes.items():
            print(f"{name}\t{summary(function)}")
        return 0
    if args.recipe == "manifest":
        if not args.folder:
            parser.error("manifest needs the checkpoint root folder")
        print(write_manifest(args.folder))
        return 0
    if args.config is None or args.out is None:
        parser.error("training needs --config and --out")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads(args.config.read_text())
    if args.seed is not None:
        config["train"]["seed"] = args.seed
    for option, section in (("steps", "train"), ("batch_size", "train"), ("render_workers", "data")):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
            config[section][option] = value
    context = setup(args.device)
    torch.manual_seed(config["train"]["seed"])  # network initialisation: same config, same weights on every rank
    try:
        weights, product = recipes[args.recipe](config, args.out, context, args.resume)
        if context.is_main:
            launcher = "python" if context.world_size == 1 else (
                f"torchrun --nnodes {os.environ.get('GROUP_WORLD_SIZE', '1')} "
                f"--nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', str(context.world_size))}")
            command = f"{launcher} -m training {shlex.join(argv)}"
            product.update(description=config.get("description", ""), recipe=args.recipe, data=config["data"],
                           train=config["train"], command=command)
            save_checkpoint(args.out, weights, product)
            print(f"checkpoint written to {args.out}")
    finally:
        teardown(context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
