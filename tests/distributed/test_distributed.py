"""TopoTrainer under DDP, FSDP2 and DeepSpeed ZeRO-3 (2 CPU processes, gloo), and the in-forward evaluation.

Each multi-process test launches tests/distributed/distributed_train.py with `accelerate launch` and one of the configs in
examples/accelerate/, 2 processes × gradient accumulation 2 × 2 sequences, and compares the final weights with one
process on the same global batch of 8 (plain SGD, τ = 5: the TopoLoss gradient moves the weights a lot, so a wrong
factor on it or a lost shard gradient shows). The run also reports how the Trainer saw it, so a test cannot pass on
a run that silently fell back to one process or an unwrapped model.
"""

import json
import subprocess
import sys

import pytest
import torch
from _scripts import ROOT, offline_env, run_script
from safetensors.torch import load_file

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.distributed import check_activation_checkpointing, uses_reentrant_checkpointing

SCRIPT = str(ROOT / "tests" / "distributed" / "distributed_train.py")
CONFIGS = ROOT / "examples" / "accelerate"
# port 0: a free port of its own, so that two test runs on one machine never meet on the default port 29500
TWO_PROCESSES = ["--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", "0"]
FP32 = ["--mixed_precision", "no"]  # the GPU configs say bf16; exact comparisons need fp32 (DeepSpeed: "auto" in JSON)
PER_PROCESS = ["--per_device_batch", "2", "--accumulation", "2"]  # global batch 2 × 2 × 2 = 8


def _launch(config: str, out, *script_args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file examples/accelerate/<config>` with 2 CPU processes; returns the finished run."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config)]
    cmd += TWO_PROCESSES + ([] if config.startswith("deepspeed") else FP32) + [SCRIPT, str(out), *script_args]
    return subprocess.run(cmd, cwd=ROOT, env=offline_env() | (env or {}), capture_output=True, text=True, timeout=600)


def _launch_ok(config: str, out, *script_args, env: dict | None = None) -> None:
    result = _launch(config, out, *PER_PROCESS, *script_args, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """Weights after 3 steps in one plain process, batch 8, no accumulation."""
    out = tmp_path_factory.mktemp("single")
    run_script([sys.executable, SCRIPT, str(out), "--per_device_batch", "8", "--accumulation", "1"])
    setup = json.loads((out / "setup.json").read_text())
    assert (setup["parallel_mode"], setup["world_size"], setup["launched_by"]) == ("not_parallel", 1, "python")
    return load_file(out / "weights.safetensors"), setup


def _assert_same_run(out, single_process, distributed_type: str, weight_kind: str):
    reference, reference_setup = single_process
    setup = json.loads((out / "setup.json").read_text())
    assert setup["parallel_mode"] == "distributed" and setup["world_size"] == 2
    assert setup["distributed_type"] == distributed_type and setup["launched_by"] == "accelerate"
    assert setup["topo_weight_outside_forward"] == weight_kind
    assert setup["global_step"] == 3
    weights = load_file(out / "weights.safetensors")
    assert weights.keys() == reference.keys()
    for name in reference:
        assert torch.allclose(weights[name], reference[name], atol=1e-5, rtol=0), name
    # The logged TopoLoss is the one of the single process (same weights at every step), and it fell a lot.
    assert setup["topo_loss"] == pytest.approx(reference_setup["topo_loss"], abs=1e-5)
    assert setup["topo_loss"][-1] < 0.5 * setup["topo_loss"][0]
    return setup


@pytest.mark.slow
def test_ddp_with_activation_checkpointing_matches_one_process(tmp_path, single_process):
    out = tmp_path / "ddp"
    _launch_ok("ddp.yaml", out, "--activation_checkpointing", "non_reentrant")
    setup = _assert_same_run(out, single_process, "MULTI_CPU", "tensor")
    assert setup["wrapper"] == "DistributedDataParallel"


@pytest.mark.slow
def test_ddp_with_reentrant_checkpointing_stops_before_training(tmp_path):
    out = tmp_path / "reentrant"
    # Accumulation 1: the TopoLoss micro-batch is the one DDP reduces, where "marked ready twice" would fail.
    result = _launch(
        "ddp.yaml", out, "--per_device_batch", "4", "--accumulation", "1", "--activation_checkpointing", "reentrant"
    )
    assert result.returncode != 0
    assert "Reentrant activation checkpointing with 2 processes" in result.stderr
    assert '"use_reentrant": false' in result.stderr
    assert "Expected to mark a variable ready only once" not in result.stderr  # stopped before DDP's failure
    assert not (out / "weights.safetensors").exists()


@pytest.mark.slow
def test_fsdp2_matches_one_process(tmp_path, single_process):
    out = tmp_path / "fsdp2"
    _launch_ok("fsdp2.yaml", out, "--fsdp_on_cpu", "--activation_checkpointing", "non_reentrant")
    setup = _assert_same_run(out, single_process, "FSDP", "dtensor")
    assert setup["wrapper"].startswith("FSDP")  # fully_shard swaps the class: FSDPGPT2LMHeadModel


@pytest.mark.slow
def test_deepspeed_zero3_matches_one_process(tmp_path, single_process):
    # scripts/setup_env.sh installs DeepSpeed (the `deepspeed` extra); without it this test fails on the import.
    import deepspeed  # noqa: F401

    out = tmp_path / "zero3"
    _launch_ok("deepspeed_zero3.yaml", out, "--deepspeed_on_cpu", env={"DS_ACCELERATOR": "cpu"})
    setup = _assert_same_run(out, single_process, "DEEPSPEED", "deepspeed_zero3_partitioned")
    assert setup["wrapper"] == "DeepSpeedEngine"


# ---- the in-forward evaluation (what ZeRO-3 uses), on one process ---------------------------------------------------


@pytest.mark.parametrize("loss", ["laplacian_pyramid", "weight_similarity"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "non_reentrant_checkpointing"])
def test_evaluate_in_forward_equals_compute(make_gpt2, loss, checkpointing):
    config = TopoConfig(target_modules=["h.0.mlp.c_fc"], watch_modules=["h.1.mlp.c_fc"], loss=loss)
    batch = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))

    reference = make_gpt2()
    topo = TopoRegularizer(config)
    expected, expected_layers = topo.compute(reference)
    (reference(batch, labels=batch).loss + 5.0 * expected).backward()

    model = make_gpt2()
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    topo = TopoRegularizer(config)
    with topo.evaluate_in_forward(model) as evaluated:
        task = model(batch, labels=batch).loss
    value, per_layer = topo.compute(model, evaluated=evaluated)
    (task + 5.0 * value).backward()  # a checkpointing recomputation runs here, after the hooks are gone
    assert set(evaluated) == set(expected_layers)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not per_layer["transformer.h.1.mlp.c_fc"].requires_grad  # watched: logged only
    for (name, param), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(param.grad, ref.grad, atol=1e-6, rtol=1e-5), name


def test_compute_needs_every_layer_from_the_forward(make_gpt2):
    model = make_gpt2()
    topo = TopoRegularizer(TopoConfig())
    with topo.evaluate_in_forward(model) as evaluated:
        pass  # no forward ran
    with pytest.raises(ValueError, match="was not run by the forward inside `evaluate_in_forward`"):
        topo.compute(model, evaluated=evaluated)


def test_reentrant_checkpointing_is_refused_where_it_breaks(make_gpt2):
    model = make_gpt2()
    check_activation_checkpointing(model, "laplacian_pyramid", world_size=2, tau_max=5.0)  # not checkpointed
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert uses_reentrant_checkpointing(model)
    check_activation_checkpointing(model, "laplacian_pyramid", world_size=1, tau_max=5.0)  # one process: fine
    check_activation_checkpointing(model, "laplacian_pyramid", world_size=2, tau_max=0.0)  # baseline: no gradient
    with pytest.raises(ValueError, match="marked ready twice"):
        check_activation_checkpointing(model, "weight_similarity", world_size=2, tau_max=5.0)
    with pytest.raises(ValueError, match="Activation Similarity would see outputs without gradient"):
        check_activation_checkpointing(model, "activation_similarity", world_size=1, tau_max=5.0)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert not uses_reentrant_checkpointing(model)
    check_activation_checkpointing(model, "laplacian_pyramid", world_size=2, tau_max=5.0)
