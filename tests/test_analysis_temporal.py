"""Temporal integration windows (hf_topo.analysis.temporal): word swaps, per-unit fits, structure yoking, maps.

The recovery tests plant known windows in a model whose hooked layer sums per-unit token features over past
positions with chosen kernels: the word-swap measurement and the fit must give the planted ``(a, b, c)`` back, and
the structure-yoking index must tell units whose window is cut at sentence boundaries from units whose window
depends on the distance alone. The aggregation and the index are checked against hand-written float64 loops that
follow the reference code (``github.com/dskrill/TemporalIntegration``) line by line.
"""

import itertools
import json
import math
import random
import statistics

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

from hf_topo.analysis.temporal import (
    WINDOW_KINDS,
    IntegrationWindows,
    NotEnoughTextError,
    aggregate_windows,
    fit_integration_windows,
    fit_window_curves,
    measure_integration_windows,
    measure_structure_yoking,
    natural_word_runs,
    normalize_word,
    plot_window_maps,
    plot_window_summary,
    sentences_of_length,
    structure_yoking_index,
    window_function,
    window_morans_i,
    word_token_spans,
)
from hf_topo.analysis.temporal.words import WordPool, encode_words
from hf_topo.data import train_bpe_tokenizer

WORDS = (
    "the a of cat dog sat on mat quickly extraordinary running jumped over lazy fox, house. garden's wonderful "
    "unbelievably tiny-green river mountain walked slowly towards bright morning light; children played outside "
    "while thunderous storms gathered above ancient castles and quiet villages"
).split()


#: Alphabetic words (they survive the reference's cleaning) for the word-level tokenizer.
ALPHA_WORDS = ["".join(pair) for pair in itertools.product("bcdfghjklmnpqrstvwxz", "aeiou")]


def random_texts(n: int, words_per_text: int, seed: int = 0, vocabulary=WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocabulary) for _ in range(words_per_text)) for _ in range(n)]


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE small enough that many words take several tokens."""
    return train_bpe_tokenizer(random_texts(200, 40, seed=1), vocab_size=300, min_frequency=2)


def word_level_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-delimited word, so that Δ in words equals Δ in positions."""
    vocab = {"<pad>": 0, **{word: i + 1 for i, word in enumerate(vocabulary)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<pad>")


class CausalKernel(nn.Module):
    """``out[b, t, u] = Σ_k kernels[u, k] · x[b, t − k, u]``: unit ``u`` integrates its input with its own kernel.

    A unit with ``yoked[u]`` only sums back to the start of its sentence (positions ``0, L, 2L, …`` start one):
    its window is cut at sentence boundaries, a structure-yoked window.
    """

    def __init__(self, kernels: torch.Tensor, yoked: torch.Tensor | None = None, sentence_words: int = 0):
        super().__init__()
        self.register_buffer("kernels", kernels.float())  # (U, K)
        self.register_buffer("yoked", torch.zeros(len(kernels), dtype=torch.bool) if yoked is None else yoked)
        self.sentence_words = sentence_words

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, U)
        length, width = x.shape[1], self.kernels.shape[1]
        past = F.pad(x, (0, 0, width - 1, 0)).unfold(1, width, 1).flip(-1)  # (B, T, U, K): x[t − k], 0 before t = 0
        reach = torch.ones(length, width, dtype=torch.bool)  # (T, K)
        if self.sentence_words:
            reach = torch.arange(width) <= (torch.arange(length) % self.sentence_words).unsqueeze(1)
        weights = self.kernels * torch.where(self.yoked.unsqueeze(1), reach.unsqueeze(1), True)  # (T, U, K)
        return (past * weights).sum(-1)


class PlantedWindowLM(nn.Module):
    """A "language model" whose ``window`` layer has known integration windows: each unit reads a random scalar
    feature of every token and sums it over the past with its kernel."""

    def __init__(self, vocab_size: int, kernels: torch.Tensor, seed: int = 0, **yoking):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.features = nn.Embedding(vocab_size, kernels.shape[0])
        with torch.no_grad():
            self.features.weight.copy_(torch.randn(vocab_size, kernels.shape[0], generator=generator))
        self.window = CausalKernel(kernels, **yoking)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.features

    def forward(self, input_ids, attention_mask=None):
        return self.window(self.features(input_ids))


# Planted windows θ(Δ) = c·(Δ+1)^(−a) + (1−c)·e^(−bΔ), as (a, b, c); each is given to 4 units.
PLANTED = {
    "exponential": (float("nan"), 0.5, 0.0),
    "power_law": (1.0, float("nan"), 1.0),
    "mixed": (0.6, 1.2, 0.5),
}


def planted_windows(max_delta: int) -> tuple[torch.Tensor, list[str]]:
    deltas = torch.arange(max_delta + 1, dtype=torch.float64)
    rows, labels = [], []
    for label, (a, b, c) in PLANTED.items():
        theta = window_function(deltas, 0.0 if math.isnan(a) else a, 0.0 if math.isnan(b) else b, c)
        rows += [theta] * 4
        labels += [label] * 4
    return torch.stack(rows), labels


# ---------------------------------------------------------------------------------------------------------------
# The fit alone
# ---------------------------------------------------------------------------------------------------------------


def test_fit_recovers_noise_free_windows_exactly():
    deltas = torch.arange(21, dtype=torch.float64)
    truth = torch.tensor(
        [[0.8, 0.3, 0.6], [0.3, 2.0, 0.7], [2.0, 0.1, 0.5], [0.05, 3.0, 0.3], [1.2, 0.6, 0.85]], dtype=torch.float64
    )
    windows = window_function(deltas, truth[:, :1], truth[:, 1:2], truth[:, 2:])
    a, b, c, r2 = fit_window_curves(windows, deltas)
    assert torch.allclose(a, truth[:, 0], rtol=2e-2, atol=2e-3)
    assert torch.allclose(b, truth[:, 1], rtol=2e-2, atol=2e-3)
    assert torch.allclose(c, truth[:, 2], atol=5e-3)
    assert (r2 > 1 - 1e-6).all()
    fitted = window_function(deltas, a[:, None], b[:, None], c[:, None])
    assert (fitted - windows).abs().max() < 1e-4


def test_fit_pure_shapes_leave_the_absent_parameter_undetermined():
    deltas = torch.arange(16, dtype=torch.float64)
    windows = torch.stack([torch.exp(-0.7 * deltas), (deltas + 1) ** -1.3])
    a, b, c, r2 = fit_window_curves(windows, deltas)
    assert c[0] < 1e-3 and math.isnan(a[0]) and b[0] == pytest.approx(0.7, rel=1e-3)
    assert c[1] > 1 - 1e-3 and math.isnan(b[1]) and a[1] == pytest.approx(1.3, rel=1e-3)
    assert (r2 > 1 - 1e-8).all()


def test_fit_with_small_noise_stays_close():
    deltas = torch.arange(21, dtype=torch.float64)
    truth = torch.tensor([[0.8, 0.3, 0.6], [1.0, 0.5, 0.5], [0.5, 0.8, 0.2]], dtype=torch.float64).repeat(20, 1)
    clean = window_function(deltas, truth[:, :1], truth[:, 1:2], truth[:, 2:])
    noise = 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b, c, r2 = fit_window_curves(clean + noise, deltas)
    assert (r2 > 0.99).all()
    for column, value in enumerate((a, b, c)):
        median = value.view(20, 3).median(dim=0).values
        assert torch.allclose(median, truth[:3, column], rtol=0.15, atol=0.05), (column, median)
    fitted = window_function(deltas, a[:, None], b[:, None], c[:, None])
    assert (fitted - clean).abs().max() < 0.03


def test_fit_flags_windows_of_neither_shape_and_spikes():
    deltas = torch.arange(21, dtype=torch.float64)
    rising = torch.cat([torch.ones(1), 0.2 + 0.6 * deltas[1:] / 20]).double()  # grows again with distance
    bump = torch.exp(-0.5 * ((deltas - 10) / 2) ** 2)  # a window far in the past
    bump = bump / bump.max()
    flat = torch.ones(21, dtype=torch.float64)
    silent = torch.full((21,), float("nan"), dtype=torch.float64)
    spike = torch.cat([torch.ones(1), torch.full((20,), 0.01)]).double()  # only the current word matters
    good = window_function(deltas, 0.8, 0.3, 0.6)
    curves = torch.stack([rising, bump, flat, silent, spike, good])
    windows = IntegrationWindows(
        deltas=deltas.long(),
        windows={"layer": curves},
        response_change={"layer": curves},
        sample_counts=torch.ones(21, dtype=torch.long),
        sheets={"layer": (2, 3)},
        difference="squared",
        n_sequences=1,
        n_swaps=1,
    )
    fits = fit_integration_windows(windows)
    kinds = [WINDOW_KINDS[k] for k in fits.layers["layer"].kind.tolist()]
    assert kinds == ["neither", "neither", "neither", "neither", "delta", "power_law"]
    fit = fits.layers["layer"]
    assert math.isnan(fit.r2[2]) and math.isnan(fit.c[3]) and fit.r2[4] > 0.999  # a spike fits, but says nothing
    assert fit.reach[4] == pytest.approx(0.01) and fit.reach[2] == 1 and math.isnan(fit.reach[3])


def test_fit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_deltas"):
        fit_window_curves(torch.ones(4, 2))
    with pytest.raises(ValueError, match="one distance per window column"):
        fit_window_curves(torch.ones(4, 5), torch.arange(3))


# ---------------------------------------------------------------------------------------------------------------
# Words and swaps
# ---------------------------------------------------------------------------------------------------------------


def test_word_spans_are_whole_words(bpe_tokenizer):
    text = "the extraordinary fox, jumped\nover unbelievably tiny-green  garden's house."
    encoding = bpe_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = word_token_spans(text, encoding["offset_mapping"])
    ids = encoding["input_ids"]
    assert [bpe_tokenizer.decode(ids[s:e]).strip() for s, e in spans] == text.split()
    assert any(e - s > 1 for s, e in spans), "the test needs multi-token words"
    covered = [t for s, e in spans for t in range(s, e)]
    assert covered == sorted(set(covered))
    rest = [bpe_tokenizer.decode([ids[t]]) for t in range(len(ids)) if t not in covered]
    assert all(not piece.strip() for piece in rest)  # only whitespace tokens lie between words


def test_word_spans_merge_a_token_that_crosses_a_word_boundary():
    text = "ab cd ef"
    # a token covering "b c" joins the first two words
    spans = word_token_spans(text, [(0, 1), (1, 4), (4, 5), (5, 6), (6, 8)])
    assert spans == [(0, 3), (4, 5)]


def test_reference_cleaning_of_words_runs_and_sentences():
    assert normalize_word("Tiny-Green,") == "tinygreen" and normalize_word("tiny-green", hyphen=" ") == "tiny green"
    assert normalize_word("''") == "" and normalize_word("@-@") == "" and normalize_word("1,000") is None
    text = "The cat, sat on 3 mats today. It was warm. Dogs ran over the hill-side!"
    runs = list(natural_word_runs([text], 3))
    # "3" ends a run; punctuation is dropped, not a break; runs never overlap
    assert runs == [["the", "cat", "sat"], ["mats", "today", "it"], ["was", "warm", "dogs"], ["ran", "over", "the"]]
    assert list(natural_word_runs([text], 2, normalize=False))[0] == ["The", "cat,"]
    assert list(sentences_of_length([text], 3)) == [["it", "was", "warm"]]
    assert list(sentences_of_length([text], 6)) == [["dogs", "ran", "over", "the", "hill", "side"]]
    assert list(sentences_of_length([text], 5)) == []  # the first sentence has a number: dropped
    with pytest.raises(ValueError, match="no text"):
        list(natural_word_runs(["  "], 3))
    with pytest.raises(TypeError, match="single string"):
        list(sentences_of_length(text, 3))


def test_swap_words_have_as_many_tokens(bpe_tokenizer):
    """A swapped copy differs from its original in exactly one whole word, with the same token count."""
    runs = list(natural_word_runs(random_texts(20, 30, seed=3), 12))
    sequences = [encode_words(bpe_tokenizer, words) for words in runs]
    assert all(s is not None for s in sequences) and len(sequences) == 40
    pool = WordPool(bpe_tokenizer)
    for sequence in sequences:
        pool.add_sequence(sequence)
    rng = random.Random(0)
    multi_token = 0
    for sequence in sequences:
        for start, end in sequence.words:
            original = tuple(sequence.ids[start:end])
            new = pool.replacement(original, rng)
            assert new is not None and new != original and len(new) == len(original)
            multi_token += len(new) > 1
            assert bpe_tokenizer.decode(list(new)).strip() in {normalize_word(w) for w in WORDS}
    assert multi_token > 0, "the test needs multi-token words"


# ---------------------------------------------------------------------------------------------------------------
# The aggregation and the structure index against hand-written float64 loops (the reference's steps)
# ---------------------------------------------------------------------------------------------------------------


def test_aggregation_is_the_median_of_per_word_ratios():
    change = torch.tensor(
        [
            [[2.0, 1.0, 0.5], [4.0, 1.0, 1.0], [1.0, 0.9, 0.1], [3.0, 3.0, 0.0]],
            [[1.0, 2.0, 3.0], [0.0, 5.0, 5.0], [2.0, 1.0, 1.0], [4.0, 1.0, 2.0]],
        ],
        dtype=torch.float64,
    )  # (units, measured words, Δ)
    expected = []
    for unit in change.tolist():
        row = []
        for delta in range(3):  # analysis.fit_curves: D_delta /= D_delta[0:1]; np.median over positions
            ratios = [word[delta] / word[0] for word in unit if word[0] > 0]
            row.append(statistics.median(ratios))
        expected.append(row)
    windows = aggregate_windows(change)
    assert windows.dtype == torch.float64
    assert torch.allclose(windows, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    # unit 0, Δ = 1: ratios 0.5, 0.25, 0.9, 1 → median (0.5 + 0.9) / 2 = 0.7 (the mean of the pair, as np.median)
    assert windows[0, 1] == pytest.approx(0.7, abs=1e-15)
    # the old aggregation (mean change over words, divided by its maximum) gives another number
    mean = change.mean(dim=1)
    assert not torch.allclose(windows, mean / mean.max(dim=1, keepdim=True).values)
    assert aggregate_windows(torch.zeros(1, 3, 2)).isnan().all()  # a unit that never responds


def test_yoking_index_follows_the_reference_loops():
    generator = torch.Generator().manual_seed(0)
    sentence_words, n_words, n_units = 4, 12, 3
    changes = torch.rand(n_units, n_words, sentence_words - 1, generator=generator, dtype=torch.float64)
    index, first_differences = structure_yoking_index(changes, sentence_words)
    for unit in range(n_units):
        # plots.yoking_plots: D[i, j] by swap i and measured j; fdiff[j + 1] for j < n − (L − 1) − 1
        D = [[changes[unit, i, j - i].item() if 0 <= j - i < sentence_words - 1 else None for j in range(n_words)]
             for i in range(n_words)]  # fmt: skip
        mdiag = statistics.median(D[i][i] for i in range(n_words))
        fdiff = [None] * n_words
        for j in range(n_words - (sentence_words - 1) - 1):
            d = [D[j + 1][j + 1 + k] - D[j][j + k] for k in range(sentence_words - 1)]
            fdiff[j + 1] = statistics.fmean(d) / mdiag
        boundaries = [fdiff[b] for b in range(sentence_words, n_words, sentence_words) if fdiff[b] is not None]
        assert index[unit].item() == pytest.approx(statistics.fmean(boundaries), abs=1e-14)
        for s in range(n_words):
            if fdiff[s] is None:
                assert math.isnan(first_differences[unit, s])
            else:
                assert first_differences[unit, s].item() == pytest.approx(fdiff[s], abs=1e-14)
    # a window that depends on the distance alone has no first-order difference anywhere
    stationary = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64).expand(2, n_words, 3)
    assert structure_yoking_index(stationary, sentence_words)[0].abs().max() < 1e-15
    with pytest.raises(ValueError, match="lags"):
        structure_yoking_index(changes[:, :, :2], sentence_words)


# ---------------------------------------------------------------------------------------------------------------
# The measurement on planted windows
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("difference", ["absolute", "squared"])
def test_planted_windows_are_recovered(difference):
    max_delta = 10
    tokenizer = word_level_tokenizer(ALPHA_WORDS)
    theta, labels = planted_windows(max_delta)
    # an absolute response change scales with |kernel|, a squared one with kernel²
    kernels = theta if difference == "absolute" else theta.sqrt()
    model = PlantedWindowLM(len(tokenizer), kernels)
    texts = random_texts(300, 24, seed=5, vocabulary=ALPHA_WORDS)
    windows = measure_integration_windows(
        model, tokenizer, texts, layers=["window"], max_delta=max_delta, sequence_words=24, max_length=24,
        max_sequences=300, batch_size=512, difference=difference, progress=False,
    )  # fmt: skip
    assert windows.n_sequences == 300 and windows.sheets == {"window": (3, 4)}
    assert windows.positions.tolist() == list(range(12, 24))  # every swapped position of a window is > 1
    assert (windows.sample_counts == 300 * 12).all()
    window = windows.windows["window"]
    assert torch.equal(window[:, 0], torch.ones(12))
    assert (window - theta.float()).abs().max() < 0.1
    assert torch.allclose(window.double(), aggregate_windows(windows.position_change["window"]), atol=1e-6)

    fits = fit_integration_windows(windows)
    fit = fits.layers["window"]
    for label, (a, b, c) in PLANTED.items():
        units = torch.tensor([i for i, name in enumerate(labels) if name == label])
        assert (fit.r2[units] > 0.95).all(), (label, fit.r2[units])
        # a squared change (a scaled χ²₁ per sample) is noisier than an absolute one at the same sample size
        assert (fit.c[units] - c).abs().max() < (0.12 if difference == "absolute" else 0.15), (label, fit.c[units])
        if c > 0.1:
            assert (fit.a[units] - a).abs().max() < 0.3 * a + 0.05, (label, fit.a[units])
        if c < 0.9:
            assert (fit.b[units] - b).abs().max() < 0.3 * b + 0.05, (label, fit.b[units])
    kinds = [WINDOW_KINDS[k] for k in fit.kind.tolist()]
    assert kinds[:4] == ["exponential"] * 4 and kinds[4:8] == ["power_law"] * 4


def test_structure_yoking_tells_sentence_yoked_from_distance_yoked_units():
    sentence_words = 6
    kernel = torch.exp(-0.3 * torch.arange(sentence_words, dtype=torch.float64))
    yoked = torch.tensor([True, False] * 4)
    tokenizer = word_level_tokenizer(ALPHA_WORDS)
    model = PlantedWindowLM(len(tokenizer), kernel.expand(8, -1), yoked=yoked, sentence_words=sentence_words)
    rng = random.Random(4)
    texts = [" ".join(rng.choice(ALPHA_WORDS) for _ in range(sentence_words)) + "." for _ in range(200)]
    result = measure_structure_yoking(
        model, tokenizer, texts, layers="window", sentence_words=sentence_words, sentences_per_sequence=4,
        max_sequences=200, batch_size=512, progress=False,
    )  # fmt: skip
    index = result.index["window"]
    # a yoked unit: f[b] = Σ_{k=1..L−2} kernel[k] / kernel[0] / (L − 1) at every boundary
    expected = float(kernel[1 : sentence_words - 1].sum() / kernel[0] / (sentence_words - 1))
    assert (index[yoked] - expected).abs().max() < 0.1, (index, expected)
    assert index[~yoked].abs().max() < 0.06, index
    assert result.maps()["window"].shape == (2, 4) and result.n_sequences == 200
    report = json.loads(json.dumps(result.to_dict(per_unit=True)))
    entry = report["layers"]["window"]
    assert entry["fraction_positive"] >= 0.5 and len(entry["index"]) == 8
    assert len(entry["mean_first_differences"]) == 4 * sentence_words
    with pytest.raises(NotEnoughTextError, match="no usable sentence of 7 words"):
        measure_structure_yoking(model, tokenizer, texts, layers="window", sentence_words=7, progress=False)
    with pytest.raises(ValueError, match="swap="):
        measure_structure_yoking(model, tokenizer, texts, layers="window", swap="pos", progress=False)


def test_measurement_is_seeded_and_the_budget_holds(bpe_tokenizer):
    model = PlantedWindowLM(len(bpe_tokenizer), planted_windows(4)[0])
    texts = random_texts(30, 30, seed=7)
    run = lambda seed: measure_integration_windows(  # noqa: E731
        model, bpe_tokenizer, texts, layers="window", max_delta=4, sequence_words=8, max_length=32, max_sequences=5,
        seed=seed, progress=False,
    )  # fmt: skip
    first, again, other = run(0), run(0), run(1)
    assert first.n_sequences == 5 and (first.sample_counts == 5 * 2).all()
    assert torch.equal(first.response_change["window"], again.response_change["window"])
    assert not torch.equal(first.response_change["window"], other.response_change["window"])


def test_bad_inputs_fail_clearly(bpe_tokenizer, tiny_gpt2):
    model = PlantedWindowLM(len(bpe_tokenizer), planted_windows(4)[0])
    texts = random_texts(5, 12, seed=2)
    common = dict(layers=["window"], max_length=32, progress=False)
    with pytest.raises(ValueError, match="sequence_words=8 must be an integer ≥ 9"):
        measure_integration_windows(model, bpe_tokenizer, texts, max_delta=6, sequence_words=8, **common)
    with pytest.raises(NotEnoughTextError, match="No sequence of 30 consecutive words"):
        measure_integration_windows(model, bpe_tokenizer, texts, max_delta=3, sequence_words=30, **common)
    with pytest.raises(ValueError, match="no module named 'mlp.c_proj'.*'window'"):
        measure_integration_windows(model, bpe_tokenizer, texts, max_delta=3, max_length=32, layers=["mlp.c_proj"])
    tiny_gpt2.resize_token_embeddings(len(bpe_tokenizer))
    with pytest.raises(ValueError, match="no module named 'h.7.mlp.c_fc'.*transformer.h.0.attn.c_attn"):
        measure_integration_windows(tiny_gpt2, bpe_tokenizer, texts, layers=["h.7.mlp.c_fc"], max_delta=3)
    with pytest.raises(ValueError, match="no text"):
        measure_integration_windows(model, bpe_tokenizer, [], max_delta=3, sequence_words=6, **common)
    with pytest.raises(ValueError, match="no text"):
        measure_integration_windows(model, bpe_tokenizer, ["  ", "\n"], max_delta=3, sequence_words=6, **common)
    with pytest.raises(TypeError, match="single string"):
        measure_integration_windows(model, bpe_tokenizer, texts[0], max_delta=3, **common)
    with pytest.raises(ValueError, match="max_delta=0"):
        measure_integration_windows(model, bpe_tokenizer, texts, max_delta=0, **common)
    with pytest.raises(ValueError, match="difference="):
        measure_integration_windows(model, bpe_tokenizer, texts, max_delta=3, difference="cosine", **common)
    with pytest.raises(ValueError, match=r"max_length=64 must be in \[2, 32\]"):
        measure_integration_windows(tiny_gpt2, bpe_tokenizer, texts, max_delta=3, max_length=64, progress=False)
    with pytest.raises(ValueError, match=r"must output \(batch, seq_len, n_units\)"):
        measure_integration_windows(
            _Flat(model), bpe_tokenizer, texts, max_delta=3, sequence_words=6, **{**common, "layers": ["pool"]}
        )


class _Flat(nn.Module):
    """Wraps a model and adds a layer whose output has no position axis."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.pool = nn.Identity()

    def forward(self, input_ids, attention_mask=None):
        return self.pool(self.model(input_ids).mean(dim=1))


# ---------------------------------------------------------------------------------------------------------------
# End to end on a real GPT-2
# ---------------------------------------------------------------------------------------------------------------


def test_gpt2_end_to_end_maps_and_report(bpe_tokenizer, tiny_gpt2, tmp_path):
    tiny_gpt2.resize_token_embeddings(len(bpe_tokenizer))
    tiny_gpt2.train()
    texts = random_texts(40, 40, seed=9)
    windows = measure_integration_windows(
        tiny_gpt2, bpe_tokenizer, texts, max_delta=6, sequence_words=10, max_length=32, max_sequences=8,
        batch_size=32, progress=False,
    )  # fmt: skip
    assert tiny_gpt2.training  # the training mode is restored
    names = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]  # the default: the topographic layers
    assert windows.layer_names == names and windows.sheets[names[0]] == (8, 16)
    for name in names:
        window = windows.windows[name]
        assert window.shape == (128, 7) and torch.isfinite(window).all()
        assert torch.equal(window[:, 0], torch.ones(128))
        assert (windows.response_change[name] >= 0).all()
    # the window of a causal LM at Δ = 0 (the measured word itself) dwarfs the far past for a random model too
    mean = windows.windows[names[0]].mean(dim=0)
    assert mean[0] > mean[-1]

    fits = fit_integration_windows(windows)
    fit = fits.layers[names[1]]
    assert fit.maps()["c"].shape == (8, 16) and fit.kind.shape == (128,)
    assert sum(fit.fractions().values()) == pytest.approx(1.0)
    morans = window_morans_i(fits)
    assert set(morans[names[0]]) == {"a", "b", "c", "r2", "reach"}

    sentences = [" ".join(text.split()[i : i + 3]) + "." for text in texts for i in range(0, 39, 3)]
    yoking = measure_structure_yoking(
        tiny_gpt2, bpe_tokenizer, sentences, sentence_words=3, sentences_per_sequence=3, max_sequences=6,
        single_token_words=False, max_length=32, batch_size=32, progress=False,
    )  # fmt: skip
    assert set(yoking.index) == set(names) and yoking.maps()[names[0]].shape == (8, 16)
    assert all(math.isfinite(yoking.morans[name]) for name in names)

    paths = plot_window_maps(fits, tmp_path / "maps", yoking=yoking)
    summary = plot_window_summary(fits, tmp_path / "summary.png", yoking=yoking)
    for path in [*paths, summary]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(paths) == 2

    report = json.loads(json.dumps({"windows": windows.to_dict(), "fits": fits.to_dict()}))
    entry = report["fits"]["layers"][names[0]]
    assert entry["sheet"] == [8, 16] and set(entry["fractions"]) == set(WINDOW_KINDS)
    assert len(entry["mean_window"]) == 7 and entry["mean_window"][0] == pytest.approx(
        float(fits.layers[names[0]].mean_window[0])
    )
    assert report["windows"]["measured_positions"] == [8, 9]
    assert len(fits.to_dict(per_unit=True)["layers"][names[0]]["c"]) == 128


def test_explicit_layers_of_any_kind(bpe_tokenizer, tiny_gpt2):
    """Any module with a (batch, seq, units) output can be measured: an attention projection, a whole MLP, the head."""
    tiny_gpt2.resize_token_embeddings(len(bpe_tokenizer))
    windows = measure_integration_windows(
        tiny_gpt2, bpe_tokenizer, random_texts(10, 30, seed=4), layers=["h.1.attn.c_proj", "h.0.mlp", "lm_head"],
        max_delta=3, sequence_words=8, max_length=32, max_sequences=4, progress=False,
    )  # fmt: skip
    assert windows.layer_names == ["transformer.h.1.attn.c_proj", "transformer.h.0.mlp", "lm_head"]
    assert windows.windows["lm_head"].shape == (len(bpe_tokenizer), 4)  # the logits are kept when hooked
    assert windows.sheets["transformer.h.1.attn.c_proj"] == (4, 8)  # 32 units, most-square


@pytest.mark.slow
def test_report_carries_the_yoking_and_loads_in_a_fresh_process(bpe_tokenizer, tiny_gpt2, tmp_path):
    """analyze_model → write_report: the yoking index, its Moran's I and maps in report.json and the typed summary."""
    import subprocess
    import sys

    from hf_topo.analysis import AnalysisSettings, analyze_model, write_report
    from hf_topo.evaluation import TokenBatch

    tiny_gpt2.resize_token_embeddings(len(bpe_tokenizer))
    rng = random.Random(6)
    short = ["the", "a", "of", "cat", "dog", "sat", "on", "mat", "fox"]
    passages = [" ".join(" ".join(rng.choices(short, k=3)) + "." for _ in range(12)) for _ in range(20)]
    settings = AnalysisSettings(
        max_tokens=64, eval_blocks=2, batch_size=16, sweeps=[], max_pairs=500, min_pairs_per_bin=1,
        temporal_windows=True, temporal_max_delta=3, temporal_sequence_words=6, temporal_max_sequences=4,
        temporal_sentence_words=3, temporal_yoking_sequences=4, temporal_single_token_words=False,
    )  # fmt: skip
    blocks = TokenBatch(torch.randint(0, len(bpe_tokenizer), (4, 32), generator=torch.Generator().manual_seed(0)))
    analysis = analyze_model(tiny_gpt2, bpe_tokenizer, blocks, settings, passages=passages, progress=False)
    assert analysis.temporal_yoking is not None, analysis.temporal_yoking_skipped
    report = write_report(analysis, tmp_path)
    yoking = report["model"]["temporal_windows"]["structure_yoking"]
    assert set(yoking["layers"]) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    assert yoking["sentence_words"] == 3 and 1 <= yoking["n_sequences"] <= 4  # draws over 32 tokens are skipped
    summary = analysis.analysis_summary()
    assert math.isfinite(summary.temporal_yoking_index) and math.isfinite(summary.temporal_yoking_morans_i)
    assert report["summary"]["temporal_yoking_morans_i"] == pytest.approx(summary.temporal_yoking_morans_i)
    code = (
        "import json, sys; from hf_topo.analysis import AnalysisSummary; "
        "s = AnalysisSummary.from_report(json.load(open(sys.argv[1]))); "
        "print(s.temporal_yoking_index, s.temporal_yoking_morans_i)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "report.json")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [float(v) for v in out] == pytest.approx([summary.temporal_yoking_index, summary.temporal_yoking_morans_i])
