"""A tiny, deterministic TopoTrainer run that tests/distributed/test_distributed.py launches, alone or under
`accelerate launch`.

    python tests/distributed/distributed_train.py OUT_DIR --per_device_batch 8 --accumulation 1
    accelerate launch --multi_gpu --num_processes 2 tests/distributed/distributed_train.py OUT_DIR --per_device_batch 2 \
        --accumulation 2

The run is the one of tests/_training.py (plain SGD, constant learning rate, no clipping, no dropout, τ = 5) on the
tiny GPT-2 and random-token data of tests/conftest.py, so that its final weights are a deterministic function of the
global batch. The main process writes `OUT_DIR/weights.safetensors` (the full state dict, gathered from the shards)
and `OUT_DIR/setup.json`: how the Trainer saw the run (parallel mode, world size, accelerate's distributed type, the
wrapper class, whether the TopoLoss weights were DTensor shards or DeepSpeed placeholders outside the forward).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from _training import training_args
from conftest import build_gpt2
from datasets import Dataset
from safetensors.torch import save_file

from hf_topo import TopoTrainer


def token_dataset(n: int = 64, seq: int = 16, vocab: int = 64, seed: int = 1) -> Dataset:
    ids = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def _weight_kind(weight: torch.Tensor) -> str:
    if hasattr(weight, "ds_id"):
        return "deepspeed_zero3_partitioned"
    if type(weight).__name__ == "DTensor":
        return "dtensor"
    return "tensor"


def configure_fsdp_on_cpu() -> dict:
    """Let accelerate run its FSDP code path on CPU processes (gloo), for testing on machines without GPUs.

    accelerate enables FSDP only for accelerator devices (`AcceleratorState` keeps `MULTI_CPU` when `use_cpu=True`),
    although `fully_shard` itself runs on CPU with gloo. This sets up the shared accelerate state the way it would
    be on GPUs, with the FSDP plugin read from the `accelerate launch --use_fsdp ...` environment, and returns the
    training arguments that make the Trainer use that state. Everything after that (the Trainer's FSDP branches,
    accelerate's `fsdp2_prepare_model`, `fully_shard`, the collectives) is the real code.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, DistributedType, PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    Accelerator(cpu=True)  # initializes the gloo process group
    PartialState().distributed_type = DistributedType.FSDP
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    return {"accelerator_config": {"use_configured_state": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--per_device_batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--max_steps", type=int, default=3)
    parser.add_argument("--tau", type=float, default=5.0)
    parser.add_argument("--activation_checkpointing", choices=["none", "reentrant", "non_reentrant"], default="none")
    parser.add_argument("--ddp_static_graph", action="store_true")
    parser.add_argument("--fsdp_on_cpu", action="store_true", help="See configure_fsdp_on_cpu.")
    parser.add_argument(
        "--deepspeed_on_cpu", action="store_true", help="DeepSpeed on CPU (DS_ACCELERATOR=cpu) over gloo."
    )
    args = parser.parse_args()

    extra = {}
    if args.activation_checkpointing != "none":
        extra = dict(
            activation_checkpointing=True,
            activation_checkpointing_kwargs={"use_reentrant": args.activation_checkpointing == "reentrant"},
        )
    if args.fsdp_on_cpu:
        extra.update(configure_fsdp_on_cpu())
    if args.deepspeed_on_cpu:
        # accelerate turns DeepSpeed on only without `use_cpu`; DeepSpeed's CPU accelerator then needs gloo.
        extra.update(use_cpu=False, ddp_backend="gloo")
    if args.ddp_static_graph:
        extra["ddp_static_graph"] = True
    # The arguments come first: under DeepSpeed ZeRO-3 they make the model below be built partitioned (zero.Init).
    train_args = training_args(
        args.output_dir,
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.accumulation,
        max_steps=args.max_steps,
        tau=args.tau,
        **extra,
    )
    trainer = TopoTrainer(model=build_gpt2(), args=train_args, train_dataset=token_dataset())
    trainer.train()

    target = trainer.topo_loss.layers(trainer.model)[0].module
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.is_world_process_zero():
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().cpu().clone() for k, v in state.items()}, out / "weights.safetensors")
        setup = {
            "parallel_mode": str(trainer.args.parallel_mode.value),
            "world_size": trainer.args.world_size,
            "distributed_type": str(trainer.accelerator.distributed_type.value),
            "wrapper": type(trainer.model_wrapped).__name__,
            "topo_weight_outside_forward": _weight_kind(target.weight),
            "global_step": trainer.state.global_step,
            "topo_loss": [h["topo_loss"] for h in trainer.state.log_history if "topo_loss" in h],
            "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "launched_by": "accelerate" if "ACCELERATE_MIXED_PRECISION" in os.environ else "python",
        }
        (out / "setup.json").write_text(json.dumps(setup, indent=2))
    # An orderly shutdown: every process leaves the group together (a process that exits while a peer's
    # communication threads still run can abort at interpreter exit, as seen under DeepSpeed on a loaded machine).
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        # Everything is written; leave without the interpreter's teardown, where DeepSpeed's CPU communication
        # threads were still seen to abort a finished run ("terminate called without an active exception", SIGABRT,
        # once in ~15 CI runs under load, after the results were saved).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
