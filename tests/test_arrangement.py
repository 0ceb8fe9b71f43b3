"""Post-hoc arrangement of MLP units (hf_topo.arrangement): exactness per family, the objective, errors, the record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import offline_env, run_script
from conftest import build_causal_lm, build_gpt2, formula_loss_f64
from transformers import AutoModelForCausalLM

from hf_topo import TopoConfig, arrange_units, laplacian_pyramid_loss, neighbour_distance_loss
from hf_topo.arrangement import find_arrangement, mds_layout, mlp_units, sheet_objective
from hf_topo.hub.card import toponet_card

# family → (builder, target layer suffix, sibling expansion suffixes, contraction suffix)
FAMILIES = {
    "gpt2": (lambda: build_gpt2(), "mlp.c_fc", (), "mlp.c_proj"),
    "gpt_neo": (lambda: build_causal_lm("gpt_neo"), "mlp.c_fc", (), "mlp.c_proj"),
    "gpt_neox": (lambda: build_causal_lm("gpt_neox"), "mlp.dense_h_to_4h", (), "mlp.dense_4h_to_h"),
    "llama": (lambda: build_causal_lm("llama"), "mlp.up_proj", ("mlp.gate_proj",), "mlp.down_proj"),
}
IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))


def _units(module) -> torch.Tensor:
    """(units, depth) incoming weights, written out per layer type (Conv1D stores in × out)."""
    weight = module.weight.detach()
    return weight.T if type(module).__name__ == "Conv1D" else weight


def _inputs(module) -> torch.Tensor:
    """(hidden units, outputs): the contraction layer's weights from each hidden unit."""
    weight = module.weight.detach()
    return weight if type(module).__name__ == "Conv1D" else weight.T


def _sheet_loss(model, name, height, width) -> float:
    """TopoLoss of a layer from the paper's formula in float64 (independent of hf_topo's implementation)."""
    units = _units(model.get_submodule(name))
    return float(formula_loss_f64(units.reshape(height, width, -1), 3.0, 3.0))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_arranging_keeps_the_function_of_every_family_and_lowers_topoloss(family):
    build, target, siblings, contraction = FAMILIES[family]
    model = build().eval()
    original = build().eval()
    with torch.no_grad():
        logits = original(input_ids=IDS).logits
    generated = original.generate(IDS[:, :4], max_new_tokens=8, do_sample=False, pad_token_id=0)

    report = arrange_units(model, objective="topoloss", max_rounds=15, progress=False)

    with torch.no_grad():
        assert (model(input_ids=IDS).logits - logits).abs().max() <= 1e-5
    assert torch.equal(model.generate(IDS[:, :4], max_new_tokens=8, do_sample=False, pad_token_id=0), generated)
    assert len(report.layers) == 2
    for name, layer in report.layers.items():
        prefix = name[: -len(target)]
        perm = layer.permutation
        assert sorted(perm.tolist()) == list(range(perm.numel())) and not torch.equal(perm, torch.arange(perm.numel()))
        # every layer of the MLP moved its units by the same permutation
        for suffix in (target, *siblings):
            assert torch.equal(
                _units(model.get_submodule(prefix + suffix)), _units(original.get_submodule(prefix + suffix))[perm]
            )
        assert torch.equal(
            _inputs(model.get_submodule(prefix + contraction)),
            _inputs(original.get_submodule(prefix + contraction))[perm],
        )
        # before / after are TopoLoss's values, checked against the paper's formula in float64
        sheet = TopoConfig.from_pretrained(model).layers[name]
        assert layer.before == pytest.approx(_sheet_loss(original, name, sheet.height, sheet.width), abs=1e-5)
        assert layer.after == pytest.approx(_sheet_loss(model, name, sheet.height, sheet.width), abs=1e-5)
        assert layer.after < layer.before - 0.02
        # and below every one of 20 random arrangements of the same units
        units = _units(original.get_submodule(name)).double()
        state = sheet_objective(units, sheet.height, sheet.width, "topoloss")
        generator = torch.Generator().manual_seed(5)
        null = [state.refresh(torch.randperm(perm.numel(), generator=generator)) for _ in range(20)]
        assert layer.after < min(null)


def test_weight_similarity_objective_is_the_neighbour_distance_loss():
    model, original = build_gpt2(), build_gpt2()
    report = arrange_units(model, objective="weight_similarity", max_rounds=10, progress=False)
    for name, layer in report.layers.items():
        sheet = TopoConfig.from_pretrained(model).layers[name]
        before = neighbour_distance_loss(_units(original.get_submodule(name)).reshape(sheet.height, sheet.width, -1))
        after = neighbour_distance_loss(_units(model.get_submodule(name)).reshape(sheet.height, sheet.width, -1))
        assert layer.before == pytest.approx(float(before), abs=1e-6)
        assert layer.after == pytest.approx(float(after), abs=1e-6)
        assert layer.after < layer.before
    record = model.config.topography["arrangement"][-1]
    assert record["objective"] == "weight_similarity" and record["settings"] == {
        "distance": "correlation",
        "neighbourhood": 1,
    }


@pytest.mark.parametrize("objective", ["topoloss", "weight_similarity"])
def test_search_is_exact_monotone_and_seeded(objective):
    units = torch.randn(96, 12, generator=torch.Generator().manual_seed(0)).double()
    result = find_arrangement(units, 8, 12, objective, max_rounds=30, progress=False,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    sheet = units[result.permutation].reshape(8, 12, -1)
    reference = laplacian_pyramid_loss(sheet) if objective == "topoloss" else neighbour_distance_loss(sheet)
    assert result.final == pytest.approx(float(reference), abs=1e-6)
    assert all(b <= a + 1e-12 for a, b in zip(result.history[:-1], result.history[1:], strict=True))
    assert result.final <= result.initial <= result.identity
    again = find_arrangement(units, 8, 12, objective, max_rounds=30, progress=False,
                             generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(again.permutation, result.permutation)
    identity_start = find_arrangement(units, 8, 12, objective, init="identity", max_rounds=0, progress=False)
    assert torch.equal(identity_start.permutation, torch.arange(96)) and identity_start.final == result.identity


def test_mds_layout_sorts_a_plane_onto_the_grid():
    # units on a 2D plane embedded in 6-D: the layout must put them in column-major order of the first coordinate
    xs, ys = torch.meshgrid(torch.arange(12.0), torch.arange(4.0), indexing="xy")
    plane = torch.stack([xs.flatten() * 3, ys.flatten()], dim=1)
    units = plane @ torch.linalg.qr(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))[0].T
    perm = mds_layout(units[torch.randperm(48, generator=torch.Generator().manual_seed(1))], 4, 12)
    assert sorted(perm.tolist()) == list(range(48))
    placed = units[torch.randperm(48, generator=torch.Generator().manual_seed(1))][perm]
    first = placed @ torch.linalg.qr(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))[0][:, 0]
    columns = first.reshape(4, 12).mean(0)
    assert torch.all(columns.diff() > 0) or torch.all(columns.diff() < 0)


def test_unsafe_models_and_bad_targets_are_refused_before_any_change():
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(build_gpt2(), LoraConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(TypeError, match="merge_and_unload"):
        arrange_units(peft_model, progress=False)

    shared = build_gpt2()
    shared.transformer.h[1].mlp = shared.transformer.h[0].mlp  # one MLP used by two blocks
    state = {k: v.clone() for k, v in shared.state_dict().items()}
    with pytest.raises(ValueError, match="tied to or shared"):
        arrange_units(shared, progress=False)
    assert all(torch.equal(v, state[k]) for k, v in shared.state_dict().items())

    model = build_gpt2()
    with pytest.raises(ValueError, match="not an MLP expansion layer"):
        arrange_units(model, target_modules=["attn.c_attn"], progress=False)
    with pytest.raises(ValueError, match="not an MLP expansion layer"):
        arrange_units(model, target_modules=["mlp.c_proj"], progress=False)
    with pytest.raises(ValueError, match="objective='blur'"):
        arrange_units(model, objective="blur", progress=False)
    with pytest.raises(ValueError, match="init="):
        arrange_units(model, init="spectral", progress=False)
    assert getattr(model.config, "topography", None) is None  # nothing attached by a refused call
    with pytest.raises(ValueError, match="disagree"):
        llama = build_causal_lm("llama")
        llama.model.layers[0].mlp.gate_proj = torch.nn.Linear(32, 60, bias=False)
        mlp_units(llama, "model.layers.0.mlp.up_proj")


def test_the_record_of_a_toponet_keeps_its_training_and_adds_the_arrangement():
    model = build_gpt2()
    TopoConfig(target_modules=["mlp.c_fc"], tau=4.0).attach_to(model.config, step=7)
    from hf_topo import TopoRegularizer

    TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], tau=4.0)).config_for(model).attach_to(model.config, step=7)
    arrange_units(model, max_rounds=3, seed=11, progress=False)
    arrange_units(model, max_rounds=3, seed=12, progress=False)
    record = model.config.topography
    assert record["tau"]["value"] == 4.0 and record["tau"]["at_step"] == 7 and record["inferred"] is False
    assert [entry["seed"] for entry in record["arrangement"]] == [11, 12]
    assert record["arrangement"][1]["mean_before"] == pytest.approx(record["arrangement"][0]["mean_after"], abs=1e-6)
    card = str(toponet_card(model))
    assert "The layout of its units is post-hoc" in card and "post-hoc arrangement of the units" in card
    assert "not from training alone" in card


def test_training_an_arranged_model_on_keeps_its_arrangement_in_the_record(tmp_path, token_dataset):
    from _training import training_args

    from hf_topo import TopoTrainer, TopoTrainingArguments

    model = build_gpt2()
    arrange_units(model, max_rounds=2, seed=5, progress=False)
    arranged = model.config.topography["arrangement"]
    args = training_args(tmp_path, TopoTrainingArguments, tau=2.0, max_steps=2)
    trainer = TopoTrainer(model=model, args=args, train_dataset=token_dataset())
    trainer.train()
    trainer.write_topography_metadata()
    record = model.config.topography
    assert record["tau"]["value"] == 2.0 and record["tau"]["at_step"] == 2
    assert record["arrangement"] == arranged and arranged[0]["seed"] == 5


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_an_arranged_model_saves_and_loads_in_a_fresh_process(tmp_path):
    model = build_gpt2()
    report = arrange_units(model, max_rounds=5, seed=3, progress=False)
    model.save_pretrained(tmp_path / "arranged")
    with torch.no_grad():
        torch.save({"ids": IDS, "logits": model(input_ids=IDS).logits}, tmp_path / "expected.pt")
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM
from hf_topo import TopoConfig, load_toponet
path = {str(tmp_path / "arranged")!r}
expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
config = TopoConfig.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
load_toponet(path)
TopoConfig.from_pretrained(model)  # the stored sheets match the weights
with torch.no_grad():
    diff = float((model(input_ids=expected["ids"]).logits - expected["logits"]).abs().max())
print(json.dumps({{"inferred": config.inferred, "arrangement": config.arrangement, "diff": diff}}))
"""
    result = subprocess.run([sys.executable, "-c", code], env=offline_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["inferred"] is True and loaded["diff"] == 0.0
    (entry,) = loaded["arrangement"]
    assert entry["seed"] == 3 and entry["method"] == "mds+swaps" and entry["objective"] == "topoloss"
    for name, layer in report.layers.items():
        assert entry["layers"][name] == pytest.approx(layer.to_dict())


@pytest.mark.slow
def test_the_arrange_command_writes_an_equivalent_model_that_analyze_reads(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    source = tmp_path / "model"
    build_gpt2().save_pretrained(source)
    vocab = {f"t{i}": i for i in range(64)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", eos_token="t0").save_pretrained(source)
    out = tmp_path / "arranged"
    command = Path(sys.executable).with_name("hf-topo")
    run_script([str(command), "arrange", "--model", str(source), "--output_dir", str(out), "--max_rounds", "5",
                "--progress", "false"])  # fmt: skip
    arranged = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        assert (arranged(input_ids=IDS).logits - original(input_ids=IDS).logits).abs().max() <= 1e-5
    written = json.loads((out / "arrangement.json").read_text())
    assert set(written["permutations"]) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    assert (out / "tokenizer.json").is_file()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(f"t{(i * 7 + j) % 64}" for j in range(40)) for i in range(40)))
    run_script([str(command), "analyze", "--model", str(out), "--text_file", str(text), "--output_dir",
                str(tmp_path / "analysis"), "--block_size", "16", "--max_tokens", "256", "--eval_blocks", "4",
                "--sweeps", "downsampling", "--downsampling_factors", "1", "2", "--progress", "false"])  # fmt: skip
    report = json.loads((tmp_path / "analysis" / "report.json").read_text())
    assert report["summary"]["morans_i"] is not None
    refused = subprocess.run([str(command), "arrange", "--model", str(source), "--output_dir", str(out)],
                             env=offline_env(), capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "not empty" in refused.stderr


def test_a_malformed_arrangement_record_is_refused():
    model = build_gpt2()
    arrange_units(model, max_rounds=1, progress=False)
    record = dict(model.config.topography, arrangement={"seed": 0})
    with pytest.raises(ValueError, match="arrangement is not null or a list of objects"):
        TopoConfig.from_dict(record)
