"""hf_topo.analysis: known answers on synthetic data, checked against direct formulas written out here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _references import morans_i_numpy

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.analysis import (
    add_weight_noise_,
    collect_activations,
    correlation_vs_distance,
    delete_tokens,
    downsampling_sweep,
    effective_dimensionality,
    input_perturbation_sweep,
    l1_prune_,
    load_passages,
    mean_morans_i,
    morans_i,
    morans_i_permutation_test,
    noise_sweep,
    prunable_weights,
    pruning_sweep,
    read_stimuli,
    restored_weights,
    selectivity_maps,
    selectivity_t,
    smoothness,
    substitute_tokens,
    tokenize_stimuli,
    topographic_layers,
    unit_weights,
    weight_pc1_map,
    weight_smoothness,
)
from hf_topo.data import train_bpe_tokenizer
from hf_topo.evaluation import TokenBatch, evaluate_perplexity, load_text_blocks

# ---- synthetic sheets --------------------------------------------------------------------------------------------


def smooth_fields(n_maps: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random maps blurred with a wide Gaussian: neighbouring units nearly equal. ``(n_maps, height·width)``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_maps, 1, height + 16, width + 16, generator=g)
    x = torch.arange(-8, 9, dtype=torch.float32)
    kernel_1d = torch.exp(-(x**2) / (2 * 3.0**2))
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]) / kernel_1d.sum() ** 2
    blurred = F.conv2d(noise, kernel.view(1, 1, 17, 17))  # (n, 1, height, width)
    return blurred.reshape(n_maps, height * width)


def shuffled_units(samples: torch.Tensor, seed: int = 1) -> torch.Tensor:
    perm = torch.randperm(samples.shape[1], generator=torch.Generator().manual_seed(seed))
    return samples[:, perm]


# ---- smoothness --------------------------------------------------------------------------------------------------


def test_smooth_sheet_is_smooth_and_shuffled_sheet_is_not():
    samples = smooth_fields(400, 12, 16)
    smooth = smoothness(samples, (12, 16))
    shuffled = smoothness(shuffled_units(samples), (12, 16))
    assert smooth.score > 0.8
    assert smooth.correlations[0] > 0.9  # neighbours nearly identical
    assert shuffled.score < 0.1
    assert smooth.n_pairs == 192 * 191 // 2  # every pair of a small sheet


def test_binned_correlations_match_numpy_corrcoef_and_explicit_distances():
    height, width, n_bins = 5, 6, 6
    samples = smooth_fields(50, height, width, seed=3) + 0.3 * torch.randn(50, height * width)
    result = correlation_vs_distance(samples, (height, width), n_bins=n_bins, min_pairs_per_bin=1)

    r = np.corrcoef(samples.double().numpy().T)
    edges = np.linspace(1.0, math.hypot(height - 1, width - 1), n_bins + 1)
    sums, counts = np.zeros(n_bins), np.zeros(n_bins, dtype=int)
    for i in range(height * width):
        for j in range(i + 1, height * width):
            d = math.hypot(i // width - j // width, i % width - j % width)
            b = min(int(np.searchsorted(edges, d, side="right")) - 1, n_bins - 1)
            sums[b] += r[i, j]
            counts[b] += 1
    expected = sums / counts
    assert result.pair_counts == counts.tolist()
    np.testing.assert_allclose(result.correlations, expected, atol=1e-5)
    assert result.score == pytest.approx(expected.max() - expected.min(), abs=1e-5)
    np.testing.assert_allclose(result.distances, (edges[:-1] + edges[1:]) / 2)


def test_subsampled_pairs_are_seeded_and_close_to_all_pairs():
    samples = smooth_fields(200, 16, 24)
    full = smoothness(samples, (16, 24), max_pairs=None)
    sub_a = smoothness(samples, (16, 24), max_pairs=5000, seed=7)
    sub_b = smoothness(samples, (16, 24), max_pairs=5000, seed=7)
    assert full.n_pairs == 384 * 383 // 2 and full.sampling == "all" and sub_a.sampling == "stratified"
    # stratified: every bin keeps min(500, its pairs) pairs or more, so the sample exceeds max_pairs
    assert all(n >= min(500, m) for n, m in zip(sub_a.pair_counts, full.pair_counts, strict=True))
    assert 5000 <= sub_a.n_pairs == sum(sub_a.pair_counts) < full.n_pairs
    assert sub_a.to_dict() == sub_b.to_dict()
    assert sub_a.score == pytest.approx(full.score, abs=0.1)


def test_constant_units_are_left_out():
    samples = smooth_fields(100, 6, 8)
    samples[:, 5] = 2.0
    result = smoothness(samples, (6, 8), min_pairs_per_bin=1)
    assert result.n_units == 47
    assert all(not math.isnan(c) for c, n in zip(result.correlations, result.pair_counts, strict=True) if n)


def test_weight_smoothness_of_a_smooth_weight_sheet(tiny_gpt2):
    layer = topographic_layers(tiny_gpt2)[0]  # Conv1D, 8x16 sheet of depth 32
    random = weight_smoothness(layer, min_pairs_per_bin=5).score
    with torch.no_grad():  # each unit's 32 weights are 32 smooth maps over the sheet
        layer.module.weight.copy_(smooth_fields(32, 8, 16))  # Conv1D weight is (in=32, out=128)
    smooth = weight_smoothness(layer, min_pairs_per_bin=5).score
    assert smooth > 0.7 and random < 0.2


def test_robust_smoothness_is_near_minus_far_half_of_the_pairs():
    height, width = 6, 8
    samples = smooth_fields(60, height, width, seed=4) + 0.2 * torch.randn(60, height * width)
    result = correlation_vs_distance(samples, (height, width), min_pairs_per_bin=1, near_distance=2.0)
    r = np.corrcoef(samples.double().numpy().T)
    pairs = [(i, j) for i in range(height * width) for j in range(i + 1, height * width)]
    d = np.array([math.hypot(i // width - j // width, i % width - j % width) for i, j in pairs])
    rs = np.array([r[i, j] for i, j in pairs])
    median = np.sort(d)[(len(d) - 1) // 2]  # the lower median
    near, far = rs[d <= 2.0], rs[d >= median]
    assert result.near_pairs == near.size and result.far_pairs == far.size and far.size >= len(d) / 2
    assert result.far_distance == pytest.approx(median)
    assert result.near_correlation == pytest.approx(near.mean(), abs=1e-5)
    assert result.far_correlation == pytest.approx(far.mean(), abs=1e-5)
    assert result.robust_score == pytest.approx(near.mean() - far.mean(), abs=1e-5)
    assert sum(result.pair_counts) == result.n_pairs == len(pairs)


def test_a_sparse_far_bin_sets_the_papers_score_but_not_the_robust_one():
    height, width = 6, 8
    samples = torch.randn(400, height * width, generator=torch.Generator().manual_seed(0))
    samples[:, 47] = samples[:, 0]  # opposite corners: the two pairs of the farthest of 40 bins, r = 1
    samples[:, 40] = samples[:, 7]
    result = correlation_vs_distance(samples, (height, width), n_bins=40, min_pairs_per_bin=1)
    assert result.pair_counts[-1] == 2 and result.correlations[-1] == pytest.approx(1.0)
    assert result.score > 0.9  # max − min is set by that one pair
    assert abs(result.robust_score) < 0.05  # near and far groups of noise: ≈ 0
    smooth = correlation_vs_distance(smooth_fields(400, height, width), (height, width), min_pairs_per_bin=1)
    assert smooth.robust_score > 0.3  # a blur of σ = 3 spacings on a 6 × 8 sheet: far pairs still correlate


def test_robust_smoothness_rejects_a_near_group_too_small():
    with pytest.raises(ValueError, match="near_distance"):
        smoothness(torch.randn(20, 30), (5, 6), near_distance=0.5)
    with pytest.raises(ValueError, match="near group holds"):
        smoothness(torch.randn(20, 30), (5, 6), n_bins=2, min_pairs_per_bin=60, near_distance=1.0)  # 49 pairs


@pytest.mark.parametrize("bad", [torch.randn(1, 30), torch.randn(10, 29)])
def test_smoothness_rejects_bad_samples(bad):
    with pytest.raises(ValueError, match="sample|shape"):
        smoothness(bad, (5, 6))


# ---- effective dimensionality ------------------------------------------------------------------------------------


def test_effective_dimensionality_isotropic_and_rank_one():
    g = torch.Generator().manual_seed(0)
    isotropic = torch.randn(50_000, 10, generator=g)
    assert effective_dimensionality(isotropic) == pytest.approx(10, rel=0.01)
    rank_one = torch.randn(500, 1, generator=g) * torch.randn(1, 40, generator=g)
    assert effective_dimensionality(rank_one) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(200, 30), (20, 50)])  # more samples than features, and fewer
def test_effective_dimensionality_matches_numpy_eigenvalues(shape):
    x = torch.randn(*shape) @ torch.randn(shape[1], shape[1])
    eigenvalues = np.linalg.eigvalsh(np.cov(x.double().numpy(), rowvar=False))
    expected = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    assert effective_dimensionality(x) == pytest.approx(expected, rel=1e-9)


def test_effective_dimensionality_rejects_degenerate_input():
    with pytest.raises(ValueError, match="at least 2 samples"):
        effective_dimensionality(torch.randn(1, 5))
    with pytest.raises(ValueError, match="do not vary"):
        effective_dimensionality(torch.ones(10, 5))


# ---- Moran's I ---------------------------------------------------------------------------------------------------


def test_morans_i_matches_double_loop_on_5x6():
    maps = torch.randn(4, 5, 6, dtype=torch.float64)
    maps[1] = smooth_fields(1, 5, 6).reshape(5, 6)
    expected = [morans_i_numpy(m.numpy()) for m in maps]
    np.testing.assert_allclose(morans_i(maps).numpy(), expected, rtol=1e-12)


def test_morans_i_smooth_near_one_shuffled_near_zero_stripes_negative():
    samples = smooth_fields(300, 24, 32)
    assert mean_morans_i(samples, (24, 32)) > 0.9
    assert abs(mean_morans_i(shuffled_units(samples), (24, 32))) < 0.05
    stripes = (torch.arange(8) % 2).float().expand(6, 8)  # queen neighbours: 2 alike, up to 6 unlike
    assert morans_i(stripes) < -0.3
    assert torch.isnan(morans_i(torch.ones(5, 6)))


def test_morans_i_over_all_layouts_averages_to_minus_one_over_n_minus_one():
    import itertools

    grid = torch.randn(2, 3, dtype=torch.float64).numpy()
    values = [morans_i_numpy(grid.reshape(-1)[list(p)].reshape(2, 3)) for p in itertools.permutations(range(6))]
    assert np.mean(values) == pytest.approx(-1 / 5, abs=1e-12)  # Cliff & Ord's expectation, exactly


def test_morans_i_permutation_p_value_matches_the_exact_null_of_a_small_sheet():
    import itertools

    grid = np.array([[3.0, 2.5, 0.1], [2.0, 0.2, -1.0]])  # smooth-ish: high values on the left
    observed = morans_i_numpy(grid)
    exact = [morans_i_numpy(grid.reshape(-1)[list(p)].reshape(2, 3)) for p in itertools.permutations(range(6))]
    exact_p = np.mean(np.array(exact) >= observed - 1e-12)  # share of the 720 layouts at least as autocorrelated
    test = morans_i_permutation_test(torch.tensor(grid), n_permutations=4000, seed=3)
    assert test.value == pytest.approx(observed, rel=1e-12)
    assert test.p_value == pytest.approx(exact_p, abs=4 * math.sqrt(exact_p * (1 - exact_p) / 4000) + 1 / 4001)
    assert test.null_mean == pytest.approx(-1 / 5, abs=4 * np.std(exact) / math.sqrt(4000))
    assert test.expected == pytest.approx(-1 / 5)
    assert test == morans_i_permutation_test(torch.tensor(grid), n_permutations=4000, seed=3)  # seeded


def test_morans_i_permutation_test_smooth_maps_significant_shuffled_not():
    samples = smooth_fields(20, 12, 16)
    smooth = morans_i_permutation_test(samples.reshape(20, 12, 16), n_permutations=99, seed=0)
    assert smooth.p_value == 1 / 100 and smooth.value > 0.8 and smooth.n_maps == 20
    assert abs(smooth.null_mean - (-1 / 191)) < 4 * smooth.null_sd / math.sqrt(99) + 1e-3
    noise = morans_i_permutation_test(torch.randn(20, 12, 16, generator=torch.Generator().manual_seed(1)), 99)
    assert noise.p_value > 0.05 and abs(noise.value) < 0.05
    with pytest.raises(ValueError, match="n_permutations"):
        morans_i_permutation_test(samples.reshape(20, 12, 16), n_permutations=0)
    with pytest.raises(ValueError, match="constant"):
        morans_i_permutation_test(torch.ones(3, 4, 5))


# ---- selectivity -------------------------------------------------------------------------------------------------


def test_selectivity_is_welch_t():
    a, b = torch.randn(7, 12) + 1.0, torch.randn(11, 12)
    an, bn = a.double().numpy(), b.double().numpy()
    expected = (an.mean(0) - bn.mean(0)) / np.sqrt(an.var(0, ddof=1) / 7 + bn.var(0, ddof=1) / 11)
    np.testing.assert_allclose(selectivity_t(a, b).numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 stimuli"):
        selectivity_t(a[:1], b)


def test_selectivity_maps_on_a_model(tiny_gpt2):
    tokenizer = _tokenizer()
    model = _gpt2_for(tokenizer)
    layers = topographic_layers(model)
    maps = selectivity_maps(
        model, tokenizer, ["the cat sat", "a dog ran far", "the bird"], ["one two", "three four five", "six"], layers,
        progress=False,
    )  # fmt: skip
    assert set(maps) == {layer.name for layer in layers}
    assert maps[layers[0].name].shape == (layers[0].sheet.height, layers[0].sheet.width)
    assert torch.isfinite(maps[layers[0].name]).all()


# ---- activations -------------------------------------------------------------------------------------------------


def test_padding_positions_are_excluded(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2)
    g = torch.Generator().manual_seed(0)
    short, long = torch.randint(1, 64, (5,), generator=g), torch.randint(1, 64, (9,), generator=g)
    ids = torch.zeros(2, 9, dtype=torch.long)
    mask = torch.zeros(2, 9, dtype=torch.long)
    ids[0, :5], mask[0, :5] = short, 1
    ids[1], mask[1] = long, 1
    padded = collect_activations(tiny_gpt2, TokenBatch(ids, mask), layers, progress=False)
    alone = [collect_activations(tiny_gpt2, seq[None], layers, progress=False) for seq in (short, long)]
    for layer in layers:
        assert padded[layer.name].shape == (14, 128)  # 5 + 9 real tokens, no padding
        expected = torch.cat([alone[0][layer.name], alone[1][layer.name]])
        torch.testing.assert_close(padded[layer.name], expected, atol=1e-5, rtol=1e-5)
    means = collect_activations(tiny_gpt2, TokenBatch(ids, mask), layers, per_sequence=True, progress=False)
    torch.testing.assert_close(means[layers[0].name][0], alone[0][layers[0].name].mean(0), atol=1e-5, rtol=1e-5)


def test_activations_are_the_layer_outputs_and_respect_the_budget(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2)
    ids = torch.randint(0, 64, (6, 16))
    acts = collect_activations(tiny_gpt2, ids, layers, batch_size=4, max_samples=50, progress=False)
    assert acts[layers[0].name].shape == (50, 128)
    hidden = tiny_gpt2(ids, output_hidden_states=True).hidden_states[0]  # embeddings = input of block 0
    block = tiny_gpt2.transformer.h[0]
    with torch.no_grad():
        residual = hidden + block.attn(block.ln_1(hidden))[0]
        c_fc = block.mlp.c_fc(block.ln_2(residual))  # (6, 16, 128), pre-activation
    torch.testing.assert_close(acts[layers[0].name], c_fc.reshape(-1, 128)[:50], atol=1e-5, rtol=1e-5)
    assert tiny_gpt2.training  # mode restored


def test_layers_from_metadata_inferred_and_shared_with_a_baseline(make_gpt2):
    toponet, baseline = make_gpt2(seed=0), make_gpt2(seed=1)
    TopoRegularizer(TopoConfig(tau=1.0)).config_for(toponet).attach_to(toponet.config)
    layers = topographic_layers(toponet)
    assert [layer.name for layer in layers] == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    same = topographic_layers(baseline, TopoConfig.from_pretrained(toponet))
    assert [layer.sheet for layer in same] == [layer.sheet for layer in layers]
    assert [layer.name for layer in topographic_layers(baseline)] == [layer.name for layer in layers]  # inferred
    assert baseline.config.topography["inferred"] is True
    assert [layer.name for layer in topographic_layers(toponet, layer_names=["h.1.mlp.c_fc"])] == [layers[1].name]
    with pytest.raises(ValueError, match="No topographic layer named 'h.7.mlp.c_fc'"):
        topographic_layers(toponet, layer_names=["h.7.mlp.c_fc"])
    wider = make_gpt2(n_embd=48)
    with pytest.raises(ValueError, match="metadata"):
        topographic_layers(wider, TopoConfig.from_pretrained(toponet))


def test_unit_weights_and_pc1_map(tiny_gpt2, tiny_neox):
    layer = topographic_layers(tiny_gpt2)[0]
    torch.testing.assert_close(unit_weights(layer), layer.module.weight.detach().T)  # Conv1D: (in, out)
    neox_layer = topographic_layers(tiny_neox)[0]
    torch.testing.assert_close(unit_weights(neox_layer), neox_layer.module.weight.detach())  # Linear: (out, in)
    units = unit_weights(layer).double().numpy()
    centered = units - units.mean(0)
    _, _, vh = np.linalg.svd(centered, full_matrices=False)
    pc1 = weight_pc1_map(layer).double().numpy().ravel()
    expected = centered @ vh[0]
    assert abs(np.dot(pc1, expected)) / (np.linalg.norm(pc1) * np.linalg.norm(expected)) == pytest.approx(1, abs=1e-6)


# ---- perplexity, pruning, noise, downsampling --------------------------------------------------------------------


def test_perplexity_equals_the_models_own_loss(tiny_gpt2):
    ids = torch.randint(0, 64, (5, 16))
    with torch.no_grad():
        loss = tiny_gpt2(ids, labels=ids).loss
    assert evaluate_perplexity(tiny_gpt2, ids, batch_size=2, progress=False) == pytest.approx(
        math.exp(loss.item()), rel=1e-5
    )


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_layer_pruning_zeroes_exactly_the_smallest_fraction(tiny_gpt2, fraction):
    weights = prunable_weights(tiny_gpt2, "topographic", topographic_layers(tiny_gpt2))
    before = {name: w.detach().clone() for name, w in weights.items()}
    zeroed = l1_prune_(weights, fraction, "layer")
    assert zeroed == sum(round(fraction * w.numel()) for w in before.values())
    for name, w in weights.items():
        pruned = w == 0
        assert int(pruned.sum()) == round(fraction * w.numel())
        if 0 < fraction < 1:
            assert before[name][pruned].abs().max() <= before[name][~pruned].abs().min()


def test_global_pruning_zeroes_exactly_the_smallest_fraction_over_all_linear_layers(tiny_gpt2):
    weights = prunable_weights(tiny_gpt2, "all_linear")
    assert "lm_head.weight" not in weights and "transformer.h.0.attn.c_attn.weight" in weights
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = round(0.3 * magnitudes.numel())
    assert l1_prune_(weights, 0.3, "global") == k
    zero = torch.cat([(w == 0).flatten() for w in weights.values()])
    assert int(zero.sum()) == k
    assert magnitudes[zero].max() <= magnitudes[~zero].min()


def test_sweeps_restore_weights_bit_exactly(tiny_gpt2):
    original = {k: v.clone() for k, v in tiny_gpt2.state_dict().items()}
    layers = topographic_layers(tiny_gpt2)
    ids = torch.randint(0, 64, (3, 16))
    pruning = pruning_sweep(tiny_gpt2, ids, [0.0, 0.5, 0.9], layers, progress=False)
    noise = noise_sweep(tiny_gpt2, ids, [0.0, 0.5], layers, repeats=2, progress=False)
    pruning_all = pruning_sweep(
        tiny_gpt2, ids, [0.5], layers, scope="all_linear", granularity="global", progress=False
    )
    for key, value in tiny_gpt2.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert pruning.delta_perplexity[0] == 0.0 and noise.delta_perplexity[0] == 0.0
    assert pruning.delta_perplexity[2] != 0.0 and pruning_all.delta_perplexity[0] != 0.0
    weights = prunable_weights(tiny_gpt2, "topographic", layers)
    with pytest.raises(RuntimeError, match="boom"), restored_weights(weights):
        l1_prune_(weights, 0.5)
        raise RuntimeError("boom")
    for key, value in tiny_gpt2.state_dict().items():
        assert torch.equal(value, original[key]), key


def test_weight_noise_scales_with_each_tensors_std():
    weight = torch.nn.Parameter(torch.randn(400, 300) * 0.05)
    original = weight.detach().clone()
    add_weight_noise_({"w": weight}, 0.5, torch.Generator().manual_seed(0))
    assert (weight.detach() - original).std().item() == pytest.approx(0.5 * original.std().item(), rel=0.02)


def test_sweeps_reject_bad_arguments(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2)
    ids = torch.randint(0, 64, (2, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pruning_sweep(tiny_gpt2, ids, [0.5, 1.5], layers, progress=False)
    with pytest.raises(ValueError, match="scope"):
        prunable_weights(tiny_gpt2, "attention")
    with pytest.raises(ValueError, match="tokenizer"):
        pruning_sweep(tiny_gpt2, ids, [0.5], layers, blimp_data=[], progress=False)


def test_token_substitution_hits_the_requested_rate_of_real_tokens_only():
    ids = torch.randint(0, 50, (40, 100), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, 80:] = 0
    corrupted = substitute_tokens(
        TokenBatch(ids, mask), 0.3, vocab_size=1000, generator=torch.Generator().manual_seed(1)
    )
    changed = corrupted.input_ids != ids  # equal to the original with probability 1/1000
    assert torch.equal(corrupted.attention_mask, mask) and not changed[:, 80:].any()
    assert changed[:, :80].float().mean().item() == pytest.approx(0.3 * 0.999, abs=0.025)
    assert int(corrupted.input_ids.max()) < 1000
    same = substitute_tokens(ids, 0.0, vocab_size=1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same.input_ids, ids)


def test_token_deletion_keeps_the_order_of_the_survivors():
    ids = torch.arange(1, 201).reshape(4, 50)
    deleted = delete_tokens(ids, 0.4, torch.Generator().manual_seed(0), pad_token_id=0)
    for row, (kept, mask) in enumerate(zip(deleted.input_ids, deleted.attention_mask, strict=True)):
        survivors = kept[mask.bool()]
        assert torch.all(survivors[1:] > survivors[:-1])  # original order, no duplicates
        assert set(survivors.tolist()) <= set(ids[row].tolist())
        assert mask[: len(survivors)].all() and not mask[len(survivors) :].any()  # left-aligned, right-padded
        assert (kept[~mask.bool()] == 0).all()
    assert deleted.attention_mask.float().mean().item() == pytest.approx(0.6, abs=0.08)
    everything = delete_tokens(ids, 1.0, torch.Generator().manual_seed(0))
    assert everything.attention_mask.sum(dim=1).tolist() == [2, 2, 2, 2]  # a sequence keeps at least two tokens
    assert everything.input_ids[:, :2].tolist() == ids[:, :2].tolist()


def test_input_perturbation_sweeps_score_what_they_say(tiny_gpt2):
    ids = torch.randint(0, 64, (6, 16), generator=torch.Generator().manual_seed(3))
    substitution = input_perturbation_sweep(
        tiny_gpt2, ids, "substitution", [0.0, 0.5], vocab_size=64, seed=4, batch_size=4, progress=False
    )
    assert substitution.delta_perplexity[0] == 0.0 and substitution.kind == "substitution"
    # The rate-0.5 point is the clean next tokens scored after the same seeded corruption, written out directly.
    generator = torch.Generator().manual_seed(4)
    substitute_tokens(ids, 0.0, 64, generator)  # the sweep draws once for rate 0 first
    corrupted = substitute_tokens(ids, 0.5, 64, generator).input_ids
    with torch.no_grad():
        logits = tiny_gpt2(corrupted).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
    assert substitution.perplexity[1] == pytest.approx(math.exp(nll.item()), rel=1e-5)
    deletion = input_perturbation_sweep(tiny_gpt2, ids, "deletion", [0.0, 0.3], seed=4, progress=False)
    assert deletion.delta_perplexity[0] == 0.0 and deletion.perplexity[1] != deletion.perplexity[0]
    with pytest.raises(ValueError, match="Unknown input perturbation 'shuffle'"):
        input_perturbation_sweep(tiny_gpt2, ids, "shuffle", progress=False)
    with pytest.raises(ValueError, match=r"rates \[0.5, 2.0\] must lie in \[0, 1\]"):
        input_perturbation_sweep(tiny_gpt2, ids, "deletion", [0.5, 2.0], progress=False)
    with pytest.raises(ValueError, match="targets .* must have the shape"):
        evaluate_perplexity(tiny_gpt2, ids, targets=ids[:, :4], progress=False)


def test_downsampling_sweep_phi_one_is_the_original_model(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2)  # 8x16 sheets of depth 32
    ids = torch.randint(0, 64, (3, 16))
    sweep = downsampling_sweep(tiny_gpt2, ids, [1, 2, 4, 9], layers, progress=False)
    assert sweep.x == [1.0, 2.0, 4.0]  # 9 > the sheet height of 8: skipped
    assert sweep.delta_perplexity[0] == pytest.approx(0.0, abs=1e-4)
    total = sum(p.numel() for p in tiny_gpt2.parameters())
    removed = [2 * 32 * (128 - (8 // f) * (16 // f)) for f in (1, 2, 4)]  # two c_fc layers of depth 32
    # By default each layer keeps one gain per unit (128); the paper's layer (gains=False) has none.
    np.testing.assert_allclose(sweep.parameters_kept, [(total - r + 2 * 128) / total for r in removed])
    paper = downsampling_sweep(tiny_gpt2, ids, [1, 2, 4], layers, progress=False, gains=False)
    np.testing.assert_allclose(paper.parameters_kept, [(total - r) / total for r in removed])
    assert paper.parameters_kept[0] == 1.0 and paper.delta_perplexity[0] == pytest.approx(0.0, abs=1e-4)


# ---- text and stimuli --------------------------------------------------------------------------------------------

CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(300))


def _tokenizer():
    return train_bpe_tokenizer([CORPUS], vocab_size=300)


def _gpt2_for(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))


def test_text_blocks_from_a_file_and_a_local_dataset(tmp_path):
    tokenizer = _tokenizer()
    text_file = tmp_path / "corpus.txt"
    text_file.write_text(CORPUS)
    blocks = load_text_blocks(tokenizer, 32, text_file=str(text_file), max_blocks=5)
    assert blocks.input_ids.shape == (5, 32) and blocks.attention_mask is None
    expected = tokenizer(CORPUS, add_special_tokens=False)["input_ids"][: 5 * 32]
    assert blocks.input_ids.flatten().tolist() == expected

    data_dir = tmp_path / "dataset"
    data_dir.mkdir()
    lines = [{"content": f"Document {i} says hello to the world."} for i in range(40)]
    (data_dir / "train.jsonl").write_text("\n".join(__import__("json").dumps(row) for row in lines))
    from_dir = load_text_blocks(tokenizer, 16, dataset_name=str(data_dir), text_column="content", max_blocks=3)
    assert from_dir.input_ids.shape == (3, 16)
    with pytest.raises(ValueError, match="no column 'text'"):
        load_text_blocks(tokenizer, 16, dataset_name=str(data_dir))


def test_passages_join_consecutive_lines_up_to_the_word_budget(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("one two three\n\nfour five\nsix seven eight nine\nten\n")
    assert load_passages(text_file=str(text), min_words=4) == ["one two three\nfour five", "six seven eight nine"]
    assert load_passages(text_file=str(text), min_words=4, max_passages=1) == ["one two three\nfour five"]
    with pytest.raises(ValueError, match="no passage of 50 words"):
        load_passages(text_file=str(text), min_words=50)


def test_bad_text_and_stimuli_fail_clearly(tmp_path):
    tokenizer = _tokenizer()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        load_text_blocks(tokenizer, 32, text_file=str(empty))
    short = tmp_path / "short.txt"
    short.write_text("just a few words\n")
    n = len(tokenizer("just a few words\n", add_special_tokens=False)["input_ids"])
    with pytest.raises(
        ValueError, match=rf"no block of 512 tokens: it has {n} tokens\. Fix: block_size= of at most {n}"
    ):
        load_text_blocks(tokenizer, 512, text_file=str(short))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_blocks(tokenizer, 32, text_file=str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="Stimulus file"):
        read_stimuli(tmp_path / "missing.txt")
    one = tmp_path / "one.txt"
    one.write_text("a single stimulus\n\n")
    with pytest.raises(ValueError, match="at least 2"):
        read_stimuli(one)


def test_a_model_folder_without_tokenizer_is_named_as_the_problem(tmp_path):
    from transformers import AutoTokenizer

    from hf_topo.loading import load_tokenizer

    model_dir = tmp_path / "model"
    _gpt2_for(_tokenizer()).save_pretrained(model_dir)  # weights and config only
    text_file = tmp_path / "corpus.txt"
    text_file.write_text(CORPUS)
    with pytest.raises(ValueError, match=r"model has no tokenizer: none of tokenizer\.json.*tokenizer_name="):
        load_tokenizer(model_dir)
    # The empty tokenizer transformers builds from that folder: the error is about the tokenizer, not the text.
    empty = AutoTokenizer.from_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"tokenizer of .*model.* encodes 'The cat sat on the mat\.' to no token"):
        load_text_blocks(empty, 32, text_file=str(text_file))
    with pytest.raises(ValueError, match="to no token"):
        tokenize_stimuli(empty, ["the quick brown fox", "dog"])


def test_stimuli_are_right_padded_with_a_mask():
    tokenizer = _tokenizer()
    batch = tokenize_stimuli(tokenizer, ["the quick brown fox", "dog"])
    lengths = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in ("the quick brown fox", "dog")]
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.attention_mask[1, lengths[1] :].sum() == 0
