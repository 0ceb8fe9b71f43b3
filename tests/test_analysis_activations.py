"""The analyses on TopoLM's sheets: activation sheets (a module's output, the residual stream entering a LayerNorm)
and input sheets (the features entering a Linear/Conv1D layer), checked against activations read independently
(``output_hidden_states``, hooks on other modules) and a numpy transcription of the smoothness definition."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import run_script
from transformers import GPT2Config, GPT2LMHeadModel

from hf_topo import TopoConfig, TopoRegularizer, topolm_targets
from hf_topo.analysis import (
    AnalysisSettings,
    analyze_model,
    collect_activations,
    effective_dimensionality,
    mean_morans_i,
    topographic_layers,
)
from hf_topo.data import train_bpe_tokenizer
from hf_topo.evaluation import TokenBatch

RESIDUAL_SITES = ["transformer.h.0.ln_2", "transformer.h.1.ln_1", "transformer.h.1.ln_2", "transformer.ln_f"]


def _smoothness_f64(samples: np.ndarray, height: int, width: int, n_bins: int, min_pairs: int) -> float:
    """The paper's smoothness from scratch: every unit pair's Pearson r against its Euclidean distance on the sheet,
    averaged in ``n_bins`` equal bins from 1 to the diagonal; the highest minus the lowest bin mean (bins with
    ``min_pairs`` pairs or more)."""
    r = np.corrcoef(samples.astype(np.float64), rowvar=False)
    rows, cols = np.divmod(np.arange(height * width), width)
    distance = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    i, j = np.triu_indices(height * width, k=1)
    edges = np.linspace(1.0, math.hypot(height - 1, width - 1), n_bins + 1)
    bins = np.clip(np.digitize(distance[i, j], edges[1:-1], right=False), 0, n_bins - 1)
    means = [r[i, j][bins == b].mean() for b in range(n_bins) if (bins == b).sum() >= min_pairs]
    return max(means) - min(means)


def _independent_residual_stream(model, input_ids) -> dict[str, torch.Tensor]:
    """The hidden states entering each residual site, read without the analysis hooks: block inputs and outputs
    from ``output_hidden_states`` and a hook on the blocks, the attention output from a hook on ``attn``."""
    seen = {}
    handles = [
        model.transformer.h[0].attn.register_forward_hook(lambda m, i, o: seen.__setitem__("attn0", o[0])),
        model.transformer.h[1].attn.register_forward_hook(lambda m, i, o: seen.__setitem__("attn1", o[0])),
        model.transformer.h[1].register_forward_hook(lambda m, i, o: seen.__setitem__("block1", o[0] if isinstance(o, tuple) else o)),
    ]  # fmt: skip
    try:
        with torch.no_grad():
            hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states
    finally:
        for handle in handles:
            handle.remove()
    streams = {
        "transformer.h.0.ln_2": hidden[0] + seen["attn0"],  # x + attn(ln_1(x))
        "transformer.h.1.ln_1": hidden[1],  # block 0's output
        "transformer.h.1.ln_2": hidden[1] + seen["attn1"],
        "transformer.ln_f": seen["block1"],  # hidden[-1] is after ln_f
    }
    return {name: value.reshape(-1, value.shape[-1]) for name, value in streams.items()}


def _fast_settings(**overrides) -> AnalysisSettings:
    settings = dict(
        max_tokens=128, batch_size=4, n_bins=6, max_pairs=10**6, min_pairs_per_bin=5, morans_permutations=0,
        eval_blocks=2, sweeps=["pruning", "noise", "downsampling"], pruning_fractions=[0.0, 0.5],
        noise_sigmas=[0.0, 0.5], downsampling_factors=[1.0, 2.0],
    )  # fmt: skip
    return AnalysisSettings(**(settings | overrides))


def test_residual_stream_sheets_measured_like_an_independent_reading(make_gpt2):
    model = make_gpt2(n_embd=36).eval()  # hidden size 36: 6×6 sheets
    config = TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model))
    layers = topographic_layers(model, config)
    assert [layer.name for layer in layers] == RESIDUAL_SITES
    assert all(layer.sheet.units == "input" and layer.sheet.shape == (6, 6, 1) for layer in layers)
    input_ids = torch.randint(0, model.config.vocab_size, (8, 16), generator=torch.Generator().manual_seed(3))
    settings = _fast_settings()
    analysis = analyze_model(model, None, TokenBatch(input_ids, None), settings, topography=config, progress=False)

    reference = _independent_residual_stream(model, input_ids)
    for name in RESIDUAL_SITES:
        acts = reference[name].float()
        expected = _smoothness_f64(acts.numpy(), 6, 6, settings.n_bins, settings.min_pairs_per_bin)
        assert analysis.smoothness[name].score == pytest.approx(expected, abs=1e-5)
        assert analysis.smoothness[name].n_samples == 128 and analysis.smoothness[name].n_units == 36
        assert analysis.morans_i[name] == pytest.approx(mean_morans_i(acts, layers[0].sheet), abs=1e-6)
        assert analysis.effective_dimensionality[name] == pytest.approx(effective_dimensionality(acts), rel=1e-5)
        assert torch.allclose(analysis.maps["mean activation"][name], acts.mean(0).view(6, 6), atol=1e-6)
    # the four streams differ from each other: each site reads its own tensor
    assert len({round(r.score, 6) for r in analysis.smoothness.values()}) == 4

    # no weight of their own: the weight measures and the weight sweeps are left out, each with its reason
    assert analysis.weight_smoothness == {} and "weight PC1" not in analysis.maps
    assert analysis.sweeps == {}
    assert set(analysis.skipped) == {f"{m}:{n}" for m in ("weight_smoothness", "weight_pc1_map") for n in RESIDUAL_SITES} | {
        "pruning", "noise", "downsampling"
    }  # fmt: skip
    assert "no weight of its own" in analysis.skipped["weight_smoothness:transformer.ln_f"]
    assert "Linear/Conv1D" in analysis.skipped["pruning"]
    data = analysis.to_dict()
    assert data["layers"]["transformer.ln_f"]["weight_smoothness"] is None
    assert data["skipped"] == analysis.skipped
    assert math.isnan(analysis.analysis_summary().weight_smoothness)
    assert analysis.perplexity > 1


def test_output_activation_sheets_and_a_conv1d_input_sheet(make_gpt2):
    model = make_gpt2(n_embd=36).eval()
    outputs = TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model, "outputs"))
    input_sheet = TopoConfig(target_modules=["mlp.c_proj"], sheet="input")
    input_ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(4))
    seen = {}
    handles = [
        model.transformer.h[0].attn.register_forward_hook(lambda m, i, o: seen.__setitem__("attn", o[0])),
        model.transformer.h[0].mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("mlp", o)),
        model.transformer.h[0].mlp.act.register_forward_hook(lambda m, i, o: seen.__setitem__("act", o)),
    ]
    with torch.no_grad():
        model(input_ids=input_ids)
    for handle in handles:
        handle.remove()

    layers = topographic_layers(model, outputs)
    assert [layer.name for layer in layers][:2] == ["transformer.h.0.attn", "transformer.h.0.mlp"]
    acts = collect_activations(model, TokenBatch(input_ids, None), layers, progress=False)
    assert torch.equal(acts["transformer.h.0.attn"], seen["attn"].reshape(64, 36))
    assert torch.equal(acts["transformer.h.0.mlp"], seen["mlp"].reshape(64, 36))

    # an input sheet of a Conv1D: its units are the 144 features entering c_proj (the GELU of c_fc), on 12×12
    (c_proj, _) = topographic_layers(model, input_sheet)
    assert c_proj.sheet.units == "input" and c_proj.sheet.shape[:2] == (12, 12)
    acts = collect_activations(model, TokenBatch(input_ids, None), [c_proj], progress=False)
    assert torch.equal(acts[c_proj.name], seen["act"].reshape(64, 144))
    # it has weights (each input unit's outgoing row): weight measures run; the weight sweeps (output sheets) do not
    analysis = analyze_model(
        model, None, TokenBatch(input_ids, None), _fast_settings(max_tokens=64), topography=input_sheet,
        progress=False,
    )  # fmt: skip
    assert set(analysis.weight_smoothness) == {c_proj.name, "transformer.h.1.mlp.c_proj"}
    assert analysis.maps["weight PC1"][c_proj.name].shape == (12, 12)
    assert analysis.sweeps == {} and set(analysis.skipped) == {"pruning", "noise", "downsampling"}


@pytest.mark.slow
def test_hf_topo_analyze_a_topolm_model_end_to_end(tmp_path):
    corpus = "".join(f"Line {i}: the {['cat', 'dog'][i % 2]} saw {i % 7} boats near the river.\n" for i in range(200))
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=36, n_layer=2, n_head=2))
    config = TopoConfig(loss="spatial_correlation", radius=2, tau=1.0, **topolm_targets(model))
    TopoRegularizer(config).config_for(model).attach_to(model.config)
    model.save_pretrained(tmp_path / "topolm")
    tokenizer.save_pretrained(tmp_path / "topolm")
    (tmp_path / "text.txt").write_text(corpus)
    out = tmp_path / "analysis"
    cmd = [str(Path(sys.executable).with_name("hf-topo")), "analyze", "--model", str(tmp_path / "topolm")]
    cmd += ["--text_file", str(tmp_path / "text.txt"), "--output_dir", str(out), "--block_size", "32"]
    cmd += ["--max_tokens", "256", "--eval_blocks", "4", "--batch_size", "4", "--min_pairs_per_bin", "5"]
    cmd += ["--morans_permutations", "19", "--input_rates", "0", "0.1", "--progress", "false"]
    run_script(cmd, tmp_path)

    report = json.loads((out / "report.json").read_text())
    layers = report["model"]["layers"]
    assert list(layers) == RESIDUAL_SITES
    for name in RESIDUAL_SITES:
        assert layers[name]["sheet"]["layer_type"] != "Linear" and layers[name]["sheet"]["units"] == "input"
        assert layers[name]["smoothness"] > 0 and layers[name]["effective_dimensionality"] > 1
        assert layers[name]["weight_smoothness"] is None and layers[name]["morans_i_test"]["n_permutations"] == 19
    skipped = report["model"]["skipped"]
    assert {"pruning", "noise", "downsampling"} <= set(skipped)
    assert set(report["model"]["sweeps"]) == {"substitution", "deletion"}  # the input sweeps need no sheet
    assert report["analysis_summary"]["weight_smoothness"] is None
    for figure in report["figures"].values():
        assert (out / figure).stat().st_size > 0


def test_analyze_refuses_to_save_a_downsampled_topolm_model(make_gpt2, tmp_path):
    from hf_topo.analysis.run import AnalyzeArguments, analyze_saved_models

    model = make_gpt2(n_embd=36)
    TopoRegularizer(TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model))).config_for(
        model
    ).attach_to(model.config)
    tokenizer = train_bpe_tokenizer(["the cat saw the dog near the river. " * 20], vocab_size=300)
    model.save_pretrained(tmp_path / "topolm")
    tokenizer.save_pretrained(tmp_path / "topolm")
    (tmp_path / "text.txt").write_text("the cat saw the dog near the river.\n" * 20)
    args = AnalyzeArguments(
        model=str(tmp_path / "topolm"), output_dir=str(tmp_path / "out"), text_file=str(tmp_path / "text.txt"),
        save_downsampled=2.0, progress=False,
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"save_downsampled= resamples .* transformer.h.0.ln_2\): drop save_downsampled="
    ):
        analyze_saved_models(args, AnalysisSettings(max_tokens=32, eval_blocks=1))
    assert not (tmp_path / "out").exists()
