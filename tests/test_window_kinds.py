"""Fig. 5B / Fig. 8: window kinds per layer, their clustering on the sheet, the arranged control
(hf_topo.analysis.temporal.kinds, hf_topo.experiments.window_kinds).

The shares are checked on planted window curves of known kinds against an independent classification (scipy's
``curve_fit`` of the same model from several starts); the patches against scipy's connected-component labelling; the
arranged model's permuted fits against a measurement of the arranged model itself.
"""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage, optimize

from hf_topo import TopoConfig, TopoRegularizer, arrange_units
from hf_topo.analysis.temporal import (
    PAPER_KINDS,
    IntegrationWindows,
    fit_integration_windows,
    kind_shares,
    layer_trend,
    measure_integration_windows,
    paper_kind_index,
    permute_window_fits,
    same_kind_patches,
    window_function,
    window_kind_summary,
)
from hf_topo.data import train_bpe_tokenizer
from hf_topo.errors import InputError
from hf_topo.experiments.window_kinds import WINDOW_MODELS, window_kind_measures, window_kinds_for_seed

DELTAS = torch.arange(21, dtype=torch.float64)  # the reference's 21 lags


def planted_curve(kind: str, rng: np.random.Generator) -> torch.Tensor:
    """A window of a known kind with small noise: exponential ``e^(−bΔ)``, power law ``(Δ+1)^(−a)``, or neither (a
    bump far in the past, or a window that rises again)."""
    if kind == "exponential":
        curve = window_function(DELTAS, 0.0, rng.uniform(0.2, 1.0), 0.0)
    elif kind == "power_law":
        curve = window_function(DELTAS, rng.uniform(0.3, 1.2), 0.0, 1.0)
    elif rng.uniform() < 0.5:
        curve = torch.exp(-0.5 * ((DELTAS - rng.uniform(8, 14)) / 2.0) ** 2)
        curve[0] = 1.0
    else:
        curve = torch.cat([torch.ones(1, dtype=torch.float64), 0.2 + 0.6 * DELTAS[1:] / 20])
    noise = torch.as_tensor(rng.normal(0, 0.005, 21))
    noise[0] = 0
    return curve + noise


def planted_layers(compositions: list[dict[str, int]], seed: int = 0) -> tuple[IntegrationWindows, list[list[str]]]:
    rng = np.random.default_rng(seed)
    windows, labels = {}, []
    for layer, counts in enumerate(compositions):
        kinds = [kind for kind, n in counts.items() for _ in range(n)]
        rng.shuffle(kinds)
        windows[f"h.{layer}"] = torch.stack([planted_curve(kind, rng) for kind in kinds]).float()
        labels.append(kinds)
    n = len(labels[0])
    measured = IntegrationWindows(
        deltas=DELTAS.long(), windows=windows, response_change=windows, sample_counts=torch.ones(21, dtype=torch.long),
        sheets={name: (4, n // 4) for name in windows}, difference="absolute", n_sequences=1, n_swaps=1,
    )  # fmt: skip
    return measured, labels


def independent_kind(curve: np.ndarray, r2_threshold: float = 0.9, c_split: float = 0.5) -> str:
    """The paper's kind of one window from scipy's bounded ``curve_fit`` of θ(Δ) = c(Δ+1)^(−a) + (1−c)e^(−bΔ), best of
    a few starts (the reference's p0 = (1, 1, 0.5) among them)."""
    x = np.arange(len(curve), dtype=float)

    def model(x, a, b, c):
        return c * (x + 1) ** (-a) + (1 - c) * np.exp(-b * x)

    best = None
    for p0 in ((1, 1, 0.5), (0.5, 0.5, 0.1), (0.5, 0.5, 0.9)):
        try:
            params, _ = optimize.curve_fit(model, x, curve, p0=p0, bounds=([0, 0, 0], [10, 10, 1]), maxfev=20000)
        except RuntimeError:
            continue
        sse = float(((model(x, *params) - curve) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, params)
    sse, (_, _, c) = best
    r2 = 1 - sse / float(((curve - curve.mean()) ** 2).sum())
    if r2 < r2_threshold:
        return "neither"
    if curve[1:].max() < 0.05:
        return "exponential"  # a delta window: the paper's short exponential kind
    return "power_law" if c >= c_split else "exponential"


def queen_morans_i(values: np.ndarray) -> float:
    """Moran's I with queen (8-neighbour) binary weights, written out: n / W · Σ w_ij z_i z_j / Σ z_i²."""
    z = values - values.mean()
    height, width = values.shape
    total, weights = 0.0, 0
    for r in range(height):
        for c in range(width):
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    if (dr or dc) and 0 <= r + dr < height and 0 <= c + dc < width:
                        total += z[r, c] * z[r + dr, c + dc]
                        weights += 1
    return values.size / weights * total / float((z**2).sum())


# Early layers exponential, middle layers power law (the paper's statement), some "neither" everywhere.
COMPOSITIONS = [
    {"exponential": 20, "power_law": 6, "neither": 6},
    {"exponential": 14, "power_law": 12, "neither": 6},
    {"exponential": 6, "power_law": 20, "neither": 6},
    {"exponential": 5, "power_law": 21, "neither": 6},
    {"exponential": 10, "power_law": 16, "neither": 6},
]


@pytest.mark.slow  # about 30 CPU s: 160 windows fitted twice (ours and scipy's from several starts)
def test_shares_per_layer_match_the_planted_kinds_and_an_independent_fit():
    measured, labels = planted_layers(COMPOSITIONS)
    fits = fit_integration_windows(measured)
    for (name, fit), planted, counts in zip(fits.layers.items(), labels, COMPOSITIONS, strict=True):
        shares = kind_shares(fit)["paper"]
        n = fit.kind.numel()
        assert shares == {kind: counts[kind] / n for kind in PAPER_KINDS}, name
        independent = [independent_kind(curve.double().numpy()) for curve in measured.windows[name]]
        ours = [PAPER_KINDS[k] for k in paper_kind_index(fit.kind).tolist()]
        assert ours == independent == planted, name
        assert sum(kind_shares(fit)["four"].values()) == pytest.approx(1.0)

    trend = window_kind_summary(fits, n_shuffles=2)["trend"]
    assert trend["middle_layers"] == [2]  # 5 layers: the middle one
    assert trend["exponential_first"] == pytest.approx(20 / 32) and trend["exponential_middle"] == pytest.approx(
        6 / 32
    )
    assert trend["power_law_first"] == pytest.approx(6 / 32) and trend["power_law_middle"] == pytest.approx(20 / 32)
    assert trend["exponential_falls"] and trend["power_law_rises"] and trend["holds"]


def test_the_trend_fails_when_the_layers_are_reversed_and_needs_three_layers():
    shares = [{"exponential": 0.2, "power_law": 0.7, "neither": 0.1}, {"exponential": 0.5, "power_law": 0.4,
              "neither": 0.1}, {"exponential": 0.6, "power_law": 0.3, "neither": 0.1},
              {"exponential": 0.9, "power_law": 0.0, "neither": 0.1}]  # fmt: skip
    trend = layer_trend(shares)
    assert trend["middle_layers"] == [1, 2]
    assert trend["exponential_middle"] == pytest.approx(0.55) and trend["power_law_change"] == pytest.approx(-0.35)
    assert not trend["exponential_falls"] and not trend["power_law_rises"] and not trend["holds"]
    assert layer_trend(shares[:2])["holds"] is None
    with pytest.raises(ValueError, match="at least one layer"):
        layer_trend([])


def test_delta_windows_count_as_the_papers_exponential_kind():
    assert paper_kind_index(torch.tensor([0, 1, 2, 3])).tolist() == [0, 1, 2, 0]


@pytest.mark.slow  # about 5 CPU s: 128 windows fitted
def test_patches_against_scipy_labels_and_clustering_against_shuffles():
    # Left half exponential, right half power law, one column of "neither": clustered kinds.
    clustered = torch.zeros(8, 16, dtype=torch.long)
    clustered[:, 8:] = 1
    clustered[:, 15] = 2
    rng = torch.Generator().manual_seed(3)
    scattered = clustered.reshape(-1)[torch.randperm(128, generator=rng)].reshape(8, 16)
    for kind_map in (clustered, scattered):
        patches = same_kind_patches(kind_map, n_shuffles=10, seed=0)
        for k, name in enumerate(PAPER_KINDS):
            labelled, count = ndimage.label((kind_map == k).numpy())  # 4-connectivity by default
            sizes = np.bincount(labelled.ravel())[1:]
            assert patches[name]["patches"] == count and patches[name]["units"] == sizes.sum()
            assert patches[name]["largest_patch"] == sizes.max()
            assert patches[name]["unit_patch_size"] == pytest.approx((sizes**2).sum() / sizes.sum())
    tight = same_kind_patches(clustered, n_shuffles=10)
    loose = same_kind_patches(scattered, n_shuffles=10)
    assert tight["exponential"]["patch_size_ratio"] > 3 and tight["power_law"]["largest_patch"] == 56
    assert loose["exponential"]["patch_size_ratio"] < 1.5

    measured, _ = planted_layers([{"exponential": 64, "power_law": 64, "neither": 0}])
    fits = fit_integration_windows(measured)
    layer = fits.layers["h.0"]
    order = paper_kind_index(layer.kind).argsort(stable=True)  # every exponential unit first: two halves
    sorted_fits = permute_window_fits(fits, {"h.0": order})
    ours = window_kind_summary(sorted_fits, n_shuffles=5)["layers"]["h.0"]["clustering"]
    shuffled = window_kind_summary(fits, n_shuffles=5)["layers"]["h.0"]["clustering"]
    two_halves = (paper_kind_index(sorted_fits.layers["h.0"].kind) == 0).double().reshape(4, 32).numpy()
    assert (
        ours["morans_i"]["exponential"] == pytest.approx(queen_morans_i(two_halves)) == pytest.approx(0.5369, abs=1e-4)
    )
    assert abs(shuffled["morans_i"]["exponential"]) < 0.2
    assert ours["morans_i"]["neither"] is None  # no unit of that kind: no map to score
    assert kind_shares(sorted_fits.layers["h.0"]) == kind_shares(layer)  # moving units keeps the shares


@pytest.mark.slow  # about 30 CPU s: two measurements and an arrangement
def test_permuted_fits_equal_a_measurement_of_the_arranged_model(make_gpt2):
    words = [a + b for a in "bcdfghjklm" for b in "aeiou"]  # alphabetic: they survive the reference's cleaning
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 30)) for _ in range(40)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    model = make_gpt2(n_layer=2, seed=1).eval()
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    TopoRegularizer(TopoConfig(tau=0.0)).config_for(model).attach_to(model.config)
    common = dict(max_delta=4, sequence_words=8, max_length=32, max_sequences=6, seed=0, progress=False)
    windows = measure_integration_windows(model, tokenizer, texts, **common)
    arranged = copy.deepcopy(model)
    report = arrange_units(arranged, seed=0, max_rounds=3, progress=False)
    permutations = {name: layer.permutation for name, layer in report.layers.items()}
    assert set(permutations) == set(windows.windows) and any(
        not torch.equal(p, torch.arange(len(p))) for p in permutations.values()
    )
    again = measure_integration_windows(arranged, tokenizer, texts, **common)
    direct = fit_integration_windows(again)
    moved = permute_window_fits(fit_integration_windows(windows), permutations)
    for name, perm in permutations.items():
        # The arranged model's responses are the baseline's, moved (float32 rounding aside) ...
        torch.testing.assert_close(again.position_change[name], windows.position_change[name][perm], atol=1e-6,
                                   rtol=1e-5)  # fmt: skip
        # ... so its windows are the baseline's moved where they are not ratios of float noise (an untrained
        # model's Δ = 0 changes can be ~1e-7, and a per-word ratio then flips in or out of the median) ...
        steady = (again.windows[name] - windows.windows[name][perm]).abs().amax(dim=1) < 1e-4
        assert steady.double().mean() > 0.5
        assert torch.equal(moved.layers[name].kind[steady], direct.layers[name].kind[steady])
        torch.testing.assert_close(moved.layers[name].reach[steady], direct.layers[name].reach[steady], atol=1e-4,
                                   rtol=1e-4)  # fmt: skip
        # ... and the fits move with the units exactly.
        assert torch.equal(moved.layers[name].c, fit_integration_windows(windows).layers[name].c[perm])
    with pytest.raises(ValueError, match="not a permutation"):
        permute_window_fits(direct, {name: torch.zeros(128, dtype=torch.long)})


SENTENCE_WORDS = "cat dog sat on mat fox ran far home tree bird sang".split()


def _sentences_text(path, n_lines: int = 60, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = [" ".join(" ".join(rng.choice(SENTENCE_WORDS, 4)) + "." for _ in range(6)) for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def seed_models(tmp_path_factory):
    """A tiny saved baseline (τ = 0 record) and 'TopoNet' (τ = 2 record) of one tokenizer, and held-out text."""
    root = tmp_path_factory.mktemp("window_kinds")
    text = _sentences_text(root / "held_out.txt")
    tokenizer = train_bpe_tokenizer([open(text).read()], vocab_size=300)
    from conftest import build_gpt2

    dirs = []
    for name, tau, seed in (("baseline", 0.0, 0), ("toponet", 2.0, 1)):
        model = build_gpt2(seed=seed)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        TopoRegularizer(TopoConfig(tau=tau)).config_for(model).attach_to(model.config)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs.append(str(root / name))
    return (*dirs, text)


TINY = dict(max_delta=4, sequence_words=8, max_sequences=6, yoking_sequences=4, sentence_words=4,
            sentences_per_sequence=3, batch_size=32, patch_shuffles=3)  # fmt: skip


def test_below_the_references_settings_is_refused(seed_models):
    baseline, toponet, text = seed_models
    with pytest.raises(InputError, match="21 lags"):
        window_kinds_for_seed(baseline, toponet, text, settings={"max_delta": 10})
    with pytest.raises(InputError, match="at least 100 sequences"):
        window_kinds_for_seed(baseline, toponet, text, settings={"max_sequences": 30})
    with pytest.raises(InputError, match="Unknown window settings"):
        window_kinds_for_seed(baseline, toponet, text, settings={"lags": 21})


@pytest.mark.slow  # about 20 CPU s: two tiny models measured, an arrangement, a figure
def test_window_kinds_for_seed_end_to_end_cached_and_its_figure_reopens(seed_models, tmp_path):
    baseline, toponet, text = seed_models
    out = tmp_path / "seed0"
    result = window_kinds_for_seed(baseline, toponet, text, seed=0, output_dir=str(out), settings=TINY,
                                   allow_below_reference=True)  # fmt: skip
    assert list(result["models"]) == list(WINDOW_MODELS)
    base, arranged = result["models"]["baseline"], result["models"]["arranged_baseline"]
    for name, layer in base["layers"].items():
        assert arranged["layers"][name]["shares"] == layer["shares"]  # the same units, moved
        assert sum(layer["shares"]["paper"].values()) == pytest.approx(1.0)
        assert layer["yoking"]["median_index"] is not None
        assert -1 <= layer["coefficient_morans_i"]["reach"] <= 1
    assert base["cost"]["n_sequences"] == 6 and base["cost"]["windows_s"] > 0
    assert result["arranged_topoloss"]["after"] <= result["arranged_topoloss"]["before"]
    assert set(base["trend"]) >= {"exponential_first", "power_law_middle", "holds"}

    measures = window_kind_measures(result)
    assert set(measures) == set(WINDOW_MODELS)
    assert measures["arranged_baseline"]["temporal_neither_share"] == measures["baseline"]["temporal_neither_share"]
    assert (
        measures["toponet"]["temporal_exponential_change"]
        == result["models"]["toponet"]["trend"]["exponential_change"]
    )
    c_values = [layer["coefficient_morans_i"]["c"] for layer in result["models"]["toponet"]["layers"].values()]
    assert measures["toponet"]["temporal_c_morans_i"] == pytest.approx(sum(c_values) / len(c_values))

    saved = json.loads((out / "window_kinds.json").read_text())
    assert saved == json.loads(json.dumps(result))
    stamp = (out / "window_kinds.json").stat().st_mtime_ns
    again = window_kinds_for_seed(baseline, toponet, text, seed=0, output_dir=str(out), settings=TINY,
                                  allow_below_reference=True)  # fmt: skip
    assert again == saved and (out / "window_kinds.json").stat().st_mtime_ns == stamp  # read, not measured again

    # A given arrangement (here the identity) is used instead of arranging again.
    layers = list(base["layers"])
    identity = {name: list(range(base["layers"][name]["n_units"])) for name in layers}
    given = window_kinds_for_seed(baseline, toponet, text, seed=0, settings=TINY, allow_below_reference=True,
                                  arrangement=identity)  # fmt: skip
    assert given["arranged_topoloss"] == {"given": True}
    for name in layers:
        assert given["models"]["arranged_baseline"]["layers"][name] == given["models"]["baseline"]["layers"][name]

    probe = (
        "import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); "
        "print(im.size[0], im.size[1], len(set(im.convert('RGB').getdata())))"
    )
    width, height, colours = map(int, subprocess.check_output([sys.executable, "-c", probe, result["figure"]]).split())
    assert width > 600 and height > 600 and colours > 20  # a drawn figure, not a blank canvas
    assert not math.isnan(width)
