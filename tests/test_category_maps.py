"""hf_topo.analysis.category_maps: category-selectivity t-maps, Moran's I, patches, SSIM and Pearson r, checked
against independent NumPy (and SciPy) computations, on planted categories through a real ResNet."""

import math

import numpy as np
import pytest
import torch
from _references import morans_i_numpy
from scipy import ndimage, stats

from hf_topo.analysis import topographic_layers
from hf_topo.analysis.category_maps import (
    category_selectivity,
    find_patches,
    group_mask,
    parse_contrasts,
    pearson_r,
    selectivity_from_responses,
    structural_similarity,
)
from hf_topo.config import TopoConfig
from hf_topo.presets import TARGET_PRESETS
from hf_topo.vision.models import build_vision_model

# ------------------------------------------------------------------------------------------------------------------
# Independent references, written from the definitions with NumPy loops


def welch_t_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eq. 2 per unit (column): (μ_a − μ_b) / sqrt(σ_a²/N_a + σ_b²/N_b), σ² with N − 1."""
    out = np.empty(a.shape[1])
    for unit in range(a.shape[1]):
        x, y = a[:, unit], b[:, unit]
        var_x = sum((v - x.mean()) ** 2 for v in x) / (len(x) - 1)
        var_y = sum((v - y.mean()) ** 2 for v in y) / (len(y) - 1)
        out[unit] = (x.mean() - y.mean()) / math.sqrt(var_x / len(x) + var_y / len(y))
    return out


def ssim_numpy(x: np.ndarray, y: np.ndarray, window: int = 7) -> float:
    """Wang et al.'s SSIM, a uniform window at every position where it fits, sample statistics per window."""
    side = min(window, *(s if s % 2 else s - 1 for s in x.shape))
    data_range = max(x.max(), y.max()) - min(x.min(), y.min())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(x.shape[0] - side + 1):
        for c in range(x.shape[1] - side + 1):
            px, py = x[r : r + side, c : c + side].ravel(), y[r : r + side, c : c + side].ravel()
            mx, my = px.mean(), py.mean()
            vx, vy = px.var(ddof=1), py.var(ddof=1)
            cxy = np.cov(px, py, ddof=1)[0, 1]
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


# ------------------------------------------------------------------------------------------------------------------
# The pieces


def test_ssim_matches_numpy_and_its_properties():
    rng = np.random.default_rng(0)
    for shape in [(8, 8), (5, 6), (10, 9)]:
        x, y = rng.normal(size=shape), rng.normal(size=shape)
        y_related = 0.7 * x + 0.3 * y
        for a, b in [(x, y), (x, y_related), (x * 3 + 1, y_related)]:
            ours = structural_similarity(torch.tensor(a), torch.tensor(b))
            assert ours == pytest.approx(ssim_numpy(a, b), rel=1e-9, abs=1e-12)
            assert structural_similarity(torch.tensor(b), torch.tensor(a)) == pytest.approx(ours, rel=1e-12)
        assert structural_similarity(torch.tensor(x), torch.tensor(x)) == pytest.approx(1.0)
        related = structural_similarity(torch.tensor(x + 10), torch.tensor(y_related + 10))
        assert related > structural_similarity(torch.tensor(x + 10), torch.tensor(y + 10))
        # anti-correlated structure on a common level is negative; SSIM is not a correlation: with local means
        # near 0 the mean (luminance) term flips sign too, which is why Pearson r is reported beside it
        assert structural_similarity(torch.tensor(x + 10), torch.tensor(10 - x)) < -0.5
        assert pearson_r(torch.tensor(x), torch.tensor(-x)) == pytest.approx(-1.0)
    x, noisy = rng.normal(size=(9, 9)), rng.normal(size=(9, 9))
    assert structural_similarity(torch.tensor(x), torch.tensor(noisy), window=3) == pytest.approx(
        ssim_numpy(x, noisy, 3), rel=1e-9
    )
    assert math.isnan(structural_similarity(torch.ones(4, 4), torch.ones(4, 4)))
    with pytest.raises(ValueError, match="odd"):
        structural_similarity(torch.zeros(4, 4), torch.zeros(4, 4), window=4)
    with pytest.raises(ValueError, match="one shape"):
        structural_similarity(torch.zeros(4, 4), torch.zeros(4, 5))


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    assert pearson_r(torch.tensor(x), torch.tensor(y)) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    assert math.isnan(pearson_r(torch.ones(3, 3), torch.tensor(x[:3, :3])))


def test_patches_on_hand_made_maps():
    grid = np.zeros((6, 7))
    grid[0:2, 0:2] = 5  # a 2×2 block: 4 units
    grid[3, 3] = 3  # these three touch only at corners: one 8-connected patch of 3
    grid[4, 4] = 3
    grid[5, 5] = 3
    grid[0, 6] = 9  # a lone unit: below min_units
    grid[2, 5] = 1.5  # below the threshold
    patches = find_patches(torch.tensor(grid))
    assert patches.sizes == (4, 3) and patches.count == 2
    assert patches.selective_units == 8
    assert find_patches(torch.tensor(grid), min_units=1).sizes == (4, 3, 1)
    assert find_patches(torch.tensor(grid), threshold=4).sizes == (4,)
    assert find_patches(torch.tensor(grid), threshold=4, min_units=1).sizes == (4, 1)
    top = find_patches(torch.tensor(grid), top_fraction=5 / 42, min_units=1)  # the 5 largest values: 9 and the 5s
    assert top.selective_units == 5 and top.sizes == (4, 1)
    assert find_patches(-torch.ones(3, 3), top_fraction=0.5).count == 0  # never a patch of negative selectivity
    with pytest.raises(ValueError, match="top_fraction"):
        find_patches(torch.zeros(3, 3), top_fraction=1.5)


def test_patches_match_scipy_labels_on_random_maps():
    rng = np.random.default_rng(2)
    for _ in range(20):
        grid = rng.normal(size=(11, 9)) * 2
        labels, n = ndimage.label(grid > 2.0, structure=np.ones((3, 3)))
        sizes = sorted((int((labels == k).sum()) for k in range(1, n + 1)), reverse=True)
        assert find_patches(torch.tensor(grid), 2.0, min_units=1).sizes == tuple(sizes)
        assert find_patches(torch.tensor(grid), 2.0, min_units=3).sizes == tuple(s for s in sizes if s >= 3)


def test_groups_and_contrasts():
    groups = ["big/animate", "big/inanimate", "small/animate", "small/inanimate", "faces/adult"]
    assert group_mask(groups, "animate").tolist() == [True, False, True, False, False]
    assert group_mask(groups, "big").tolist() == [True, True, False, False, False]
    assert group_mask(groups, "big/animate").tolist() == [True, False, False, False, False]
    assert group_mask(groups, "adult").tolist() == [False, False, False, False, True]
    assert group_mask(groups, "anim").tolist() == [False] * 5  # whole folder names only
    assert parse_contrasts("big:small, animate:inanimate") == [("big", "small"), ("animate", "inanimate")]
    assert parse_contrasts([("a", "b")]) == [("a", "b")]
    for bad in ["big", "big:big", "a:b:c", ":b"]:
        with pytest.raises(ValueError, match="Contrast"):
            parse_contrasts(bad)


def test_selectivity_from_responses_matches_numpy_and_scipy():
    rng = np.random.default_rng(3)
    groups = ["faces/adult"] * 5 + ["faces/child"] * 4 + ["places/house"] * 6 + ["bodies/limb"] * 5 + ["extra"] * 3
    n_units = 24
    responses = rng.normal(size=(len(groups), n_units))
    responses[:9, :6] += 2.0  # faces drive the first row of the 4×6 sheet
    result = selectivity_from_responses(
        {"layer": torch.tensor(responses, dtype=torch.float32)},
        {"layer": (4, 6)},
        groups,
        categories=["bodies", "faces", "places"],
        contrasts="adult:child",
    )
    assert result.categories == ["bodies", "faces", "places"]
    assert result.map_names == ["bodies", "faces", "places", "adult-vs-child"]
    assert result.n_images == {"bodies": 5, "faces": 9, "places": 6, "adult": 5, "child": 4}
    values = torch.tensor(responses, dtype=torch.float32).double().numpy()  # what the float32 responses hold
    category = np.array([g.split("/")[0] for g in groups])
    pool = np.isin(category, ["bodies", "faces", "places"])  # "extra" is not among the categories
    for name in result.categories:
        mine = category == name
        expected = welch_t_numpy(values[mine], values[pool & ~mine])
        scipy_t = stats.ttest_ind(values[mine], values[pool & ~mine], equal_var=False).statistic
        t_map = result.t_maps["layer"][name]
        assert t_map.shape == (4, 6)
        np.testing.assert_allclose(t_map.flatten().numpy(), expected, rtol=1e-9)
        np.testing.assert_allclose(t_map.flatten().numpy(), scipy_t, rtol=1e-9)
        assert result.morans_i["layer"][name] == pytest.approx(morans_i_numpy(t_map.numpy()), rel=1e-9)
    adult = np.array([g == "faces/adult" for g in groups])
    child = np.array([g == "faces/child" for g in groups])
    np.testing.assert_allclose(
        result.t_maps["layer"]["adult-vs-child"].flatten().numpy(),
        welch_t_numpy(values[adult], values[child]),
        rtol=1e-9,
    )
    faces = result.t_maps["layer"]["faces"].numpy()
    assert faces[0].min() > 2 and faces[1:].max() < 2  # the planted row
    assert result.patches["layer"]["faces"].sizes == (6,)
    relation = result.relation("layer", "places", "faces")
    assert relation.ssim == pytest.approx(ssim_numpy(faces, result.t_maps["layer"]["places"].numpy()), rel=1e-9)
    assert relation.pearson == pytest.approx(
        np.corrcoef(faces.ravel(), result.t_maps["layer"]["places"].numpy().ravel())[0, 1]
    )
    assert len(result.relations["layer"]) == 6  # every pair of the 4 maps
    as_json = result.to_json()
    assert as_json["layers"]["layer"]["patches"]["faces"]["count"] == 1
    assert as_json["layers"]["layer"]["t_maps"]["faces"][0][0] == pytest.approx(float(faces[0, 0]))


def test_bad_labels_are_refused():
    responses = {"layer": torch.randn(6, 4)}
    with pytest.raises(ValueError, match="One category"):
        selectivity_from_responses(responses, {"layer": (2, 2)}, ["a"] * 6)
    with pytest.raises(ValueError, match="have no images"):
        selectivity_from_responses(responses, {"layer": (2, 2)}, ["a"] * 3 + ["b"] * 3, categories=["a", "c"])
    with pytest.raises(ValueError, match="each side needs"):
        selectivity_from_responses(responses, {"layer": (2, 2)}, ["a"] * 5 + ["b"])
    with pytest.raises(ValueError, match="matches 0 image"):
        selectivity_from_responses(responses, {"layer": (2, 2)}, ["a"] * 3 + ["b"] * 3, contrasts="a:c")
    with pytest.raises(ValueError, match="one row per image"):
        selectivity_from_responses(responses, {"layer": (2, 2)}, ["a"] * 4 + ["b"] * 4)


# ------------------------------------------------------------------------------------------------------------------
# Planted categories through a real ResNet


def _planted_resnet():
    """tiny-resnet whose stem passes R, G, B into channels 0-2 and whose first shortcut projection (64 channels,
    an 8×8 sheet) reads R in the sheet's top half, G in the bottom-left and B in the bottom-right quadrant."""
    torch.manual_seed(0)
    model = build_vision_model("tiny-resnet", ["r", "g", "b"], image_size=32).eval()
    with torch.no_grad():
        stem = model.resnet.embedder.embedder.convolution
        stem.weight.zero_()
        for channel in range(3):
            stem.weight[channel, channel, 3, 3] = 1.0
        shortcut = model.resnet.encoder.stages[0].layers[0].shortcut.convolution
        shortcut.weight.zero_()
        rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        reads = torch.where(rows < 4, 0, torch.where(cols < 4, 1, 2)).flatten()
        for unit, channel in enumerate(reads.tolist()):
            shortcut.weight[unit, channel, 0, 0] = 1.0
    return model, reads.view(8, 8)


def _coloured_images(n_per_class: int = 8, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    generator = torch.Generator().manual_seed(seed)
    images, groups = [], []
    for k, name in enumerate(["red", "green", "blue"]):
        for i in range(n_per_class):
            pixels = torch.rand(3, 32, 32, generator=generator) * 0.5
            pixels[k] += 1.0
            images.append(pixels)
            groups.append(f"{name}/{'big' if i % 2 else 'small'}")
    return torch.stack(images), groups


@pytest.mark.slow
def test_planted_categories_give_their_patches_and_match_eq2():
    model, reads = _planted_resnet()
    config = TopoConfig(target_modules=TARGET_PRESETS["resnet"], tau=1.0)
    layers = topographic_layers(model, config, ["stages.0.layers.0.shortcut.convolution"])
    pixels, groups = _coloured_images()
    result = category_selectivity(model, pixels, groups, layers, contrasts="big:small", progress=False)
    name = layers[0].name
    # eq. 2 on the layer's units computed by hand: stem → shortcut convolution, spatial mean
    with torch.no_grad():
        by_hand = layers[0].module(model.resnet.embedder(pixels)).mean(dim=(2, 3)).double().numpy()
    colour = np.array([g.split("/")[0] for g in groups])
    for k, category in enumerate(["red", "green", "blue"]):
        t_map = result.t_maps[name][category]
        expected = welch_t_numpy(by_hand[colour == category], by_hand[colour != category])
        np.testing.assert_allclose(t_map.flatten().numpy(), expected, rtol=1e-4)
        planted = (reads == k).numpy()
        assert t_map.numpy()[planted].min() > 2 and t_map.numpy()[~planted].max() < 0
        assert result.patches[name][category].sizes == (int(planted.sum()),)
        assert result.morans_i[name][category] == pytest.approx(morans_i_numpy(t_map.numpy()), rel=1e-9)
        assert result.morans_i[name][category] > 0.5  # block-shaped maps are clustered
    # red (top half) and green (bottom-left) are anti-related; the big/small contrast carries no planted signal
    assert result.relation(name, "red", "green").pearson < 0
    assert result.patches[name]["big-vs-small"].count <= 1
    shuffled = selectivity_from_responses(
        {name: torch.tensor(by_hand)[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]},
        {name: layers[0].sheet},
        groups,
    )
    assert shuffled.morans_i[name]["red"] < result.morans_i[name]["red"] - 0.3  # layout, not values, makes I
