"""The claims table: every claim of the two papers that a CPU can test, measured over several seeds, TopoNet
(and Weight / Activation Similarity models) against a baseline trained on the same recipe.

The papers: Deb, Deb & Murty, *TopoNets* (ICLR 2025) and Truong & Hasson's Weight / Activation Similarity
(WS / AS). For every seed, :func:`run_claims` trains one model per family on one recipe
(:func:`~hf_topo.experiments.families.train_family`: only the regularizer and its strength differ, the seed sets
the initialization and the data order of all of them), analyses each on held-out text
(:func:`~hf_topo.analysis.analyze_model`), fine-tunes the baseline and the TopoNet with LoRA
(:func:`~hf_topo.finetuning.finetune_lora`) and evaluates every claim of :data:`CLAIMS`.

**Verdict rule.** A claim compares a measure of model ``a`` with that of model ``b`` (e.g. the TopoNet's
smoothness with the baseline's) in an expected direction. For each seed ``s`` the signed margin is

    x_s = sign · (f(a_s) − f(b_s)) + margin

(``sign`` +1 when ``a`` should be larger, −1 when smaller; ``f`` the identity, or ``log`` for perplexities;
``margin`` 0 except for "no large cost" claims). The seeds pair the models (same initialization seed and data
order), so the test is a **paired one-sided t-test** of the mean of ``x_s`` over ``n ≥ 2`` seeds at ``alpha``
(default 0.05; :func:`hf_topo.experiments.statistics.paired_verdict`):

* **reproduced**: mean ``x`` > 0 with ``p < alpha`` (the expected direction, significant over the seeds);
* **contradicted**: mean ``x`` < 0 with ``p < alpha`` in the other direction;
* **not at this scale**: neither (no significant difference either way at this model size and seed count);
* **not measured**: the measure is missing (a family or the LoRA / temporal-window step was not run) or
  fewer than 2 seeds.

With 3 seeds the t statistic must exceed 2.92 (2 degrees of freedom): a claim is reproduced only when every seed
agrees closely. The claims are data (:class:`Claim`); add one to :data:`CLAIMS` to extend the table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from ..analysis import AnalysisSettings, analyze_model, load_passages, topographic_layers
from ..analysis.activations import is_output_weight_sheet
from ..analysis.report import json_safe
from ..arrangement import arrange_units
from ..config import TopoConfig
from ..errors import InputError, parameter
from ..evaluation import load_text_blocks
from ..finetuning import LoraArguments, finetune_lora
from ..loading import check_data_file
from ..trainer import TopoTrainingArguments
from .families import FAMILIES, train_family
from .recipes import hold_out_lines
from .statistics import VERDICTS, is_finite, paired_verdict, seed_statistics
from .tau_sweep import DEFAULT_TAUS, matched_pruning_fraction, plot_tau_sweep, tau_model_name, tau_sweep_designs

__all__ = [
    "portable_command",
    "CLAIMS",
    "TRAINED_FAMILIES",
    "VERDICTS",
    "Claim",
    "ClaimsArguments",
    "evaluate_claim",
    "measure_model",
    "measure_seed",
    "model_measures",
    "run_claims",
]

logger = logging.getLogger(__name__)

#: The families of :data:`~hf_topo.experiments.families.FAMILIES` the claims train. ``topolm``: TopoLM's
#: spatial-correlation loss on its sites (the residual stream after every attention and MLP sublayer).
TRAINED_FAMILIES = ("baseline", "toponet", "ws", "as", "topolm")
#: Models made post hoc, without training: the trained model's MLP units arranged on their sheets by
#: :func:`hf_topo.arrange_units` (TopoLoss objective, seeded with the seed), the same function (the control of
#: ``docs/arrange.md``).
POST_HOC = {"arranged_baseline": "baseline", "arranged_toponet": "toponet"}
#: With ``topolm`` among the families, the baseline is also analysed on TopoLM's sites under this name.
BASELINE_AT_TOPOLM_SITES = "baseline_at_topolm_sites"


@dataclass
class ClaimsArguments:
    """The recipe of the claims table: data, model, seeds, regularizer strengths and what each analysis measures.

    Data and models:
        train_file (`str`): training text; its last `validation_fraction` of lines is held out for every analysis.
        output_dir (`str`): where the models (`seed<s>/<family>/`), `paper_claims.json`, `paper_claims.md` and
            `paper_claims.png` go.
        seeds (`list[int]`, defaults to `[0, 1, 2]`): one set of models per seed.
        families (`list[str]`, defaults to all of `baseline, toponet, ws, as, topolm, arranged_baseline,
            arranged_toponet`): the models of :data:`TRAINED_FAMILIES` to train and those of :data:`POST_HOC` to make
            post hoc.
        model_preset (`str`, defaults to `"tiny-gpt2"`), config_overrides (`str`, defaults to
            `"n_layer=6,n_embd=256,n_head=8"`: 6 × 256, larger than the demo's 4 × 128).
        vocab_size, block_size, max_steps, train_batch_size, learning_rate: the pretraining recipe.
        topo_tau, ws_tau, as_tau, topolm_tau: strengths of TopoLoss, Weight / Activation Similarity and TopoLM's loss.
        topolm_radius, topolm_neighbourhoods: TopoLM's neighbourhoods (radius 5 and 5 per batch, as TopoLM).
    Analysis (on the held-out text):
        max_tokens, eval_blocks: activation samples and perplexity blocks.
        pruning_fraction, noise_sigma, downsampling_factor, input_rate: the one perturbation strength of each claim.
        pruning_sweep_fractions (defaults to 0.1, …, 0.9), downsampling_factors (defaults to 2, 3, 4): Fig. 4A / 4B's
            sweeps on every model; the pruning fractions matched to each φ
            (:func:`~hf_topo.experiments.tau_sweep.matched_pruning_fraction`) are measured too.
        blimp_dir, blimp_paradigms, blimp_limit: BLiMP data (optional): every model's BLiMP accuracy.
    The τ sweep (:mod:`hf_topo.experiments.tau_sweep`):
        taus (`list[float]`, defaults to `0 0.5 1 5 10 50`): one TopoNet per τ and seed next to the other families
            (τ = 0 is the baseline, τ = `topo_tau` the TopoNet: each trained once), saved under
            `seed<s>/toponet_tau<τ>/`; the paper's designs (Fig. 2B, 3B / A.9, 4A, 4B / A.10) run on them.
        morans_permutations: of the Moran's I permutation test.
        temporal_windows, temporal_max_delta, temporal_max_sequences: temporal integration windows of the
            baseline and the TopoNet (the clusters claim).
    LoRA (the baseline and the TopoNet):
        lora_train_file (`str`, optional): the fine-tuning text (another domain than `train_file`); without it the
            LoRA claim is not measured.
        lora_rank, lora_steps, lora_max_train_tokens, lora_learning_rate.
    """

    train_file: str = field(metadata={"help": "Training text (.txt/.jsonl); its last lines are held out."})
    output_dir: str = field(default="outputs/claims", metadata={"help": "Models and results."})
    output: str | None = field(
        default=None,
        metadata={"help": "Also write the results JSON here (e.g. benchmarks/results/paper_claims.json)."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (≥ 3 for a verdict)."})
    families: list[str] = field(
        default_factory=lambda: [*TRAINED_FAMILIES, *POST_HOC],
        metadata={"help": f"Models per seed, among {', '.join([*TRAINED_FAMILIES, *POST_HOC])}."},
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "Last fraction of lines held out."})
    model_preset: str = field(default="tiny-gpt2", metadata={"help": "Architecture preset."})
    config_overrides: str | None = field(
        default="n_layer=6,n_embd=256,n_head=8", metadata={"help": "Preset overrides (6 × 256 by default)."}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Tokenizer vocabulary (trained once per seed)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per sequence."})
    max_steps: int = field(
        default=400,
        metadata={"help": "Optimizer steps per model (400 × 16 × 128 tokens: ~2 epochs of WikiText-2 test)."},
    )
    train_batch_size: int = field(default=16, metadata={"help": "Sequences per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine, 5 % warm-up)."})
    topo_tau: float = field(default=5.0, metadata={"help": "TopoLoss strength of the TopoNet."})
    ws_tau: float = field(default=2.0, metadata={"help": "Weight Similarity strength."})
    as_tau: float = field(default=2.0, metadata={"help": "Activation Similarity strength."})
    topolm_tau: float = field(
        default=20.0, metadata={"help": "TopoLM spatial-correlation strength (τ × the mean over its sites)."}
    )
    topolm_radius: int = field(default=5, metadata={"help": "TopoLM's neighbourhood radius (TopoLM: 5)."})
    topolm_neighbourhoods: int = field(default=5, metadata={"help": "TopoLM's neighbourhoods per micro-batch."})
    max_tokens: int = field(default=4096, metadata={"help": "Activation samples per layer."})
    eval_blocks: int = field(default=32, metadata={"help": "Blocks on which each perplexity is measured."})
    pruning_fraction: float = field(default=0.5, metadata={"help": "L1 pruning: fraction of weights zeroed."})
    taus: list[float] = field(
        default_factory=lambda: list(DEFAULT_TAUS),
        metadata={"help": "TopoLoss strengths of the τ sweep (0: the baseline; an empty list: no sweep)."},
    )
    pruning_sweep_fractions: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        metadata={"help": "Fig. 4A: fractions of L1 pruning measured on every model (with the matched ones)."},
    )
    downsampling_factors: list[float] = field(
        default_factory=lambda: [2.0, 3.0, 4.0],
        metadata={"help": "Fig. 4A/4B: φ of the φ × φ downsamplings (and of the matched pruning fractions)."},
    )
    blimp_dir: str | None = field(
        default=None, metadata={"help": "BLiMP jsonl directory: every model's BLiMP accuracy (Fig. 2B, 3B)."}
    )
    blimp_paradigms: str | None = field(default=None, metadata={"help": "Comma-separated BLiMP paradigms."})
    blimp_limit: int | None = field(default=None, metadata={"help": "At most this many BLiMP pairs per paradigm."})
    noise_sigma: float = field(default=0.5, metadata={"help": "Weight noise σ (× each weight tensor's std)."})
    downsampling_factor: float = field(default=2.0, metadata={"help": "φ of the φ × φ downsampling."})
    input_rate: float = field(default=0.1, metadata={"help": "Share of input tokens substituted."})
    morans_permutations: int = field(default=199, metadata={"help": "Permutations of the Moran's I test."})
    temporal_windows: bool = field(default=True, metadata={"help": "Measure temporal windows (clusters claim)."})
    temporal_max_delta: int = field(default=10, metadata={"help": "Longest word distance of the windows."})
    temporal_max_sequences: int = field(default=50, metadata={"help": "Passages for the windows."})
    lora_train_file: str | None = field(default=None, metadata={"help": "LoRA fine-tuning text (other domain)."})
    lora_rank: int = field(default=4, metadata={"help": "LoRA rank (alpha = 2 × rank)."})
    lora_steps: int = field(default=100, metadata={"help": "LoRA optimizer steps."})
    lora_max_train_tokens: int = field(default=100_000, metadata={"help": "LoRA training tokens."})
    lora_learning_rate: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level of the verdicts."})
    note: str | None = field(
        default=None, metadata={"help": "A note stored with the results (e.g. why a recipe was reduced)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when available)."})
    reuse_trained: bool = field(
        default=False, metadata={"help": "Reuse the models and per-seed measures already saved in output_dir."}
    )
    progress: bool = field(default=True, metadata={"help": "Progress bars."})

    def __post_init__(self):
        known = [*TRAINED_FAMILIES, *POST_HOC]
        unknown = sorted(set(self.families) - set(known))
        if unknown or "baseline" not in self.families:
            raise InputError(
                f"{parameter('families', self.families)}: every family must be one of {known} and 'baseline' is "
                "required (every claim compares against it)."
            )
        for made, source in POST_HOC.items():
            if made in self.families and source not in self.families:
                raise InputError(f"{parameter('families')}: {made} arranges the {source} model; add {source}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(
                f"{parameter('seeds', self.seeds)}: give distinct seeds, at least 3 for a verdict (e.g. 0 1 2)."
            )
        for name in (
            "max_steps", "train_batch_size", "block_size", "max_tokens", "eval_blocks", "lora_steps", "topolm_radius",
            "topolm_neighbourhoods",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise InputError(f"{parameter(name, getattr(self, name))} must be at least 1.")
        if not 0 < self.pruning_fraction < 1 or not 0 < self.input_rate < 1:
            raise InputError(
                f"{parameter('pruning_fraction')} and {parameter('input_rate')} must be between 0 and 1 (exclusive)."
            )
        if not self.noise_sigma > 0 or not self.downsampling_factor > 1:
            raise InputError(f"{parameter('noise_sigma')} must be > 0 and {parameter('downsampling_factor')} > 1.")
        if any(not (is_finite(tau) and tau >= 0) for tau in self.taus) or len(set(self.taus)) != len(self.taus):
            raise InputError(
                f"{parameter('taus', self.taus)}: give distinct TopoLoss strengths >= 0 (e.g. 0 0.5 1 5)."
            )
        if any(not 0 < f < 1 for f in self.pruning_sweep_fractions):
            raise InputError(f"{parameter('pruning_sweep_fractions')} must lie between 0 and 1 (exclusive).")
        if any(not (is_finite(f) and f > 1) for f in self.downsampling_factors):
            raise InputError(f"{parameter('downsampling_factors')} must be factors φ > 1 (e.g. 2 3 4).")
        if not 0 < self.alpha < 1:
            raise InputError(f"{parameter('alpha', self.alpha)} must be between 0 and 1 (e.g. 0.05).")

    def recipe(self) -> dict[str, Any]:
        """The settings that define the measurement (no paths), for the results JSON."""
        skip = {
            "train_file", "output_dir", "output", "lora_train_file", "device", "reuse_trained", "progress", "note",
            "blimp_dir",
        }  # fmt: skip
        recipe = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in skip}
        recipe["train_file"] = os.path.basename(self.train_file)
        recipe["lora_train_file"] = os.path.basename(self.lora_train_file) if self.lora_train_file else None
        recipe["blimp_dir"] = os.path.basename(self.blimp_dir.rstrip("/")) if self.blimp_dir else None
        return recipe


def portable_command(argv: Sequence[str]) -> str:
    """A command line without machine-specific paths: absolute paths become relative to the working directory when
    inside it, else their file name."""
    import shlex

    def portable(arg: str) -> str:
        if not os.path.isabs(arg):
            return arg
        relative = os.path.relpath(arg)
        return relative if not relative.startswith("..") else os.path.basename(arg.rstrip("/"))

    return shlex.join([portable(arg) for arg in argv])


# ---- the claims ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One claim of a paper as a comparison of a measure between two models of the same seed.

    Attributes:
        id: short name (the key in the results).
        claim: what the paper says, in a sentence.
        source, where, paper_value: the paper, its figure or section, and the value or direction it reports.
        metric: the per-model measure (a key of :func:`model_measures`' output).
        a, b: the models compared (of :data:`TRAINED_FAMILIES`, :data:`POST_HOC` or
            :data:`BASELINE_AT_TOPOLM_SITES`).
        sign: +1 when the claim is ``a > b``, −1 when ``a < b``.
        log: compare ``log`` of the measure (perplexities: a ratio).
        margin: allowance in the claim's favour (see the module docstring), 0 for a strict direction.
        metric_b: the measure read from ``b`` when it differs from ``metric`` (two measures of one model, e.g. the
            paper's downsampled layer against the one with per-unit gains).
    """

    id: str
    claim: str
    source: str
    where: str
    paper_value: str
    metric: str
    a: str
    b: str
    sign: int
    log: bool = False
    margin: float = 0.0
    metric_b: str | None = None

    @property
    def b_label(self) -> str:
        """The key of ``b``'s values in a table entry (``b`` itself, or ``b:metric_b`` when ``a`` is ``b``)."""
        return f"{self.b}:{self.metric_b}" if self.metric_b and self.b == self.a else self.b

    def expected(self) -> str:
        relation = ">" if self.sign > 0 else "<"
        if self.metric_b:
            return f"{self.metric}({self.a}) {relation} {self.metric_b}({self.b})"
        if self.margin:
            return (
                f"{self.metric}: {self.a} {relation} {self.b} (margin {self.margin:g}{' in log' if self.log else ''})"
            )
        return f"{self.metric}: {self.a} {relation} {self.b}"


_TOPONETS = "Deb, Deb & Murty, TopoNets (ICLR 2025)"
_TH = "Truong & Hasson (Weight / Activation Similarity)"
_TOPOLM = "Rathi et al., TopoLM (ICLR 2025)"
_OURS = "hf_topo (not a paper claim)"

#: Every claim the table measures. Relative Δ perplexity = Δ perplexity / unperturbed perplexity of the same model.
CLAIMS: tuple[Claim, ...] = (
    Claim("smoothness", "TopoNets are topographic: correlation falls off with distance on the sheet far more than "
          "in the baseline.", _TOPONETS, "§3.1, Fig. 2B (GPT-Neo-125M, NanoGPT)",
          "TopoNets' smoothness well above the baseline's at every τ (read off Fig. 2B)", "smoothness",
          "toponet", "baseline", +1),
    Claim("robust_smoothness", "The same, with the robust near-minus-far smoothness (no sparse bin sets it).",
          _TOPONETS, "§3.1 (our robust variant of the smoothness of §2.3)", "as smoothness", "robust_smoothness",
          "toponet", "baseline", +1),
    Claim("morans_i", "TopoNet activation maps are spatially autocorrelated (Moran's I, as Truong & Hasson measure "
          "it).", _TOPONETS, "§3.1; Moran's I from Truong & Hasson", "higher than the baseline (≈ 0)",
          "morans_i", "toponet", "baseline", +1),
    Claim("perplexity_cost", "TopoLoss induces topography without a large loss of task performance.", _TOPONETS,
          "§3.1, Fig. 2B", "small BLiMP / perplexity cost", "perplexity", "toponet", "baseline", -1, True,
          math.log(1.05)),
    Claim("effective_dimensionality", "Topography lowers the effective dimensionality of the representations.",
          _TOPONETS, "§3.2, Fig. 3B", "dimensionality falls as smoothness rises (P < 0.05 across models)",
          "effective_dimensionality", "toponet", "baseline", -1),
    Claim("pruning", "TopoNets are more resilient to L1 unstructured pruning.", _TOPONETS, "§3.3, Fig. 4A",
          "smaller performance drop than the baseline at every pruned fraction", "pruning_relative_delta",
          "toponet", "baseline", -1),
    Claim("downsampling", "TopoNets are more resilient to downsampling of their topographic layers.", _TOPONETS,
          "§3.3, Fig. 4B, A.10", "performance kept from 125.6M to 102.3M parameters (GPT-Neo-125M; our count of it is 125.2M)",
          "downsampling_relative_delta", "toponet", "baseline", -1),  # the paper's layer, without gains
    Claim("lora_gain", "TopoNets gain more from LoRA fine-tuning than the baseline.", _TOPONETS,
          "A.11, Fig. 11–12 (NanoGPT, ranks 2/4/8)", "consistently larger Δ validation loss for TopoNets",
          "lora_delta_eval_loss", "toponet", "baseline", -1),
    Claim("temporal_clusters", "Temporal integration window parameters cluster on the TopoNet's sheet.", _TOPONETS,
          "§3.4, Fig. 5B, A.7", "clustered power-law / exponential / sentence-yoked maps",
          "temporal_c_morans_i", "toponet", "baseline", +1),
    Claim("ws_weight_noise", "Weight Similarity improves robustness to weight perturbation.", _TH,
          "weight robustness", "smaller drop than without the regularizer", "noise_relative_delta", "ws",
          "baseline", -1),
    Claim("as_weight_noise", "Activation Similarity improves robustness to weight perturbation.", _TH,
          "weight robustness", "smaller drop than without the regularizer", "noise_relative_delta", "as",
          "baseline", -1),
    Claim("ws_input_robustness", "Weight Similarity improves robustness to input perturbation.", _TH,
          "input robustness (pixel noise; here: random token substitution)", "smaller drop",
          "substitution_relative_delta", "ws", "baseline", -1),
    Claim("as_input_robustness", "Activation Similarity improves robustness to input perturbation.", _TH,
          "input robustness (pixel noise; here: random token substitution)", "smaller drop",
          "substitution_relative_delta", "as", "baseline", -1),
    Claim("ws_vs_as_weight_maps", "Weight Similarity gives smooth weight maps; Activation Similarity does not.",
          _TH, "WS vs AS maps", "WS smooth, AS not", "weight_smoothness", "ws", "as", +1),
    Claim("ws_vs_as_activation_maps", "WS gives spatially smooth activation maps; AS gives correlation structure "
          "without spatial smoothness.", _TH, "WS vs AS maps (Moran's I)", "WS high Moran's I, AS low",
          "morans_i", "ws", "as", +1),
    Claim("topolm_morans_i", "TopoLM's spatial-correlation loss makes activation maps spatially smooth on its sheet.",
          _TOPOLM, "§3, Fig. 2 (smooth, clustered activation maps)", "clustered maps; none in the baseline",
          "morans_i", "topolm", BASELINE_AT_TOPOLM_SITES, +1),
    Claim("topolm_smoothness", "The same, as correlation falling off with distance on the sheet.", _TOPOLM,
          "§3 (our smoothness of TopoNets §2.3 on TopoLM's sites)", "higher than the baseline on the same sites",
          "smoothness", "topolm", BASELINE_AT_TOPOLM_SITES, +1),
    Claim("topolm_perplexity_cost", "TopoLM's topography comes at little cost in language modelling.", _TOPOLM,
          "§3, Table 1 (validation loss close to the non-topographic control)", "small cost", "perplexity",
          "topolm", "baseline", -1, True, math.log(1.05)),
    Claim("arranged_smoothness", "A post-hoc arrangement of a baseline's MLP units on the sheet (the same function) "
          "makes its activations topographic.", _OURS, "the arrangement control (docs/arrange.md)",
          "–", "smoothness", "arranged_baseline", "baseline", +1),
    Claim("arranged_vs_toponet_smoothness", "A TopoNet is more topographic than the arranged baseline.", _OURS,
          "the arrangement control", "–", "smoothness", "toponet", "arranged_baseline", +1),
    Claim("arranged_downsampling", "The arrangement alone gives a baseline some downsampling resilience.", _OURS,
          "the arrangement control", "–", "downsampling_relative_delta", "arranged_baseline", "baseline", -1),
    Claim("arranged_vs_toponet_downsampling", "A TopoNet resists downsampling better than the arranged baseline: "
          "trained topography is more than a permutation.", _OURS, "the arrangement control", "–",
          "downsampling_relative_delta", "toponet", "arranged_baseline", -1),
    Claim("gains_downsampling", "Per-unit gains make a TopoNet's downsampling cheaper than the paper's layer.", _OURS,
          "downsampling with gains (docs/downsampling.md)", "–", "downsampling_gains_relative_delta", "toponet",
          "toponet", -1, metric_b="downsampling_relative_delta"),
)  # fmt: skip


def evaluate_claim(claim: Claim, per_seed: Sequence[dict[str, dict[str, float]]], alpha: float = 0.05) -> dict:
    """A claim's entry in the table: the measure of both models and their difference over the seeds (mean ± sd),
    the paired one-sided t-test and the verdict (see the module docstring).

    Args:
        per_seed: for each seed, ``{family: {metric: value}}`` (:func:`measure_seed`).
    """
    pairs = []
    for seed_measures in per_seed:
        a = seed_measures.get(claim.a, {}).get(claim.metric)
        b = seed_measures.get(claim.b, {}).get(claim.metric_b or claim.metric)
        if is_finite(a) and is_finite(b) and (not claim.log or (a > 0 and b > 0)):
            pairs.append((a, b))
    f = math.log if claim.log else (lambda v: v)
    differences = [f(a) - f(b) for a, b in pairs]
    entry: dict[str, Any] = {
        "id": claim.id,
        "claim": claim.claim,
        "paper": claim.source,
        "where": claim.where,
        "paper_value": claim.paper_value,
        "metric": claim.metric,
        "expected": claim.expected(),
        "compared": {"a": claim.a, "b": claim.b_label},
        "ours": {
            **seed_statistics(differences),
            "difference": f"{'log ' if claim.log else ''}{claim.metric}({claim.a}) − "
            f"{claim.metric_b or claim.metric}({claim.b})",
            claim.a: seed_statistics([a for a, _ in pairs]),
            claim.b_label: seed_statistics([b for _, b in pairs]),
        },
    }
    entry.update(paired_verdict([claim.sign * d + claim.margin for d in differences], alpha))
    return entry


# ---- measuring one model, one seed -----------------------------------------------------------------------------


def _relative_delta(summary, kind: str, x: float) -> float | None:
    delta = summary.delta_perplexity(kind, x)
    return None if delta is None or not summary.perplexity else delta / summary.perplexity


def _curve(summary, kind: str) -> dict[str, list] | None:
    """A sweep's perturbed points as ``{"x", "perplexity_ratio" (perturbed / unperturbed), "parameters_kept"}``."""
    sweep = summary.sweeps.get(kind)
    if sweep is None:
        return None
    points = [p for p in sweep.perturbed_points() if p.perplexity - p.delta_perplexity > 0]
    return {
        "x": [p.x for p in points],
        "perplexity_ratio": [p.perplexity / (p.perplexity - p.delta_perplexity) for p in points],
        "parameters_kept": [p.parameters_kept for p in points],
    }


def model_measures(summary, args: ClaimsArguments) -> dict[str, Any]:
    """The per-model measures the claims and the τ-sweep designs read, from an
    :class:`~hf_topo.analysis.AnalysisSummary`: scalars by name, and the pruning and (paper) downsampling sweeps as
    curves (``"pruning_curve"``, ``"downsampling_curve"``: ``{"x", "perplexity_ratio", "parameters_kept"}``)."""
    measures: dict[str, Any] = {
        name: summary.measure(name)
        for name in (
            "perplexity", "smoothness", "robust_smoothness", "weight_smoothness", "morans_i", "morans_i_p_value",
            "effective_dimensionality",
        )
    }  # fmt: skip
    measures["pruning_relative_delta"] = _relative_delta(summary, "pruning", args.pruning_fraction)
    measures["noise_relative_delta"] = _relative_delta(summary, "noise", args.noise_sigma)
    # The paper's downsampled layer (no per-unit gains) is what its claim is about; the gains variant is extra.
    measures["downsampling_relative_delta"] = _relative_delta(summary, "downsampling_paper", args.downsampling_factor)
    measures["downsampling_gains_relative_delta"] = _relative_delta(summary, "downsampling", args.downsampling_factor)
    measures["substitution_relative_delta"] = _relative_delta(summary, "substitution", args.input_rate)
    for name in ("temporal_c_morans_i", "temporal_reach_morans_i"):  # whatever the temporal analysis provides
        measures[name] = getattr(summary, name, None)
    measures["pruning_curve"] = _curve(summary, "pruning")
    measures["downsampling_curve"] = _curve(summary, "downsampling_paper")
    return measures


def _matched_fractions(args: ClaimsArguments, layers) -> dict[float, float]:
    """``{φ: pruning fraction}`` that keeps as many weights of ``layers`` as φ × φ downsampling (Fig. 4A), for the φ
    every sheet allows; none when the layers are not Linear/Conv1D output sheets (nothing to prune or downsample)."""
    if not layers or not all(is_output_weight_sheet(layer) for layer in layers):
        return {}
    sheets = [(layer.sheet.height, layer.sheet.width, layer.sheet.depth) for layer in layers]
    side = min(min(h, w) for h, w, _ in sheets)
    return {phi: matched_pruning_fraction(sheets, phi) for phi in args.downsampling_factors if phi <= side}


def _analysis_settings(
    args: ClaimsArguments, seed: int, temporal: bool, matched: dict[float, float]
) -> AnalysisSettings:
    return AnalysisSettings(
        max_tokens=args.max_tokens,
        eval_blocks=args.eval_blocks,
        pruning_fractions=sorted({0.0, args.pruning_fraction, *args.pruning_sweep_fractions, *matched.values()}),
        noise_sigmas=[0.0, args.noise_sigma],
        downsampling_factors=sorted({1.0, args.downsampling_factor, *args.downsampling_factors}),
        input_rates=[0.0, args.input_rate],
        sweeps=["pruning", "noise", "downsampling", "substitution"],
        downsampling_paper=True,
        morans_permutations=args.morans_permutations,
        temporal_windows=temporal,
        temporal_max_delta=args.temporal_max_delta,
        temporal_max_sequences=args.temporal_max_sequences,
        seed=seed,
    )


def _trained_models(args: ClaimsArguments) -> dict[str, tuple[str, float]]:
    """The trained models of one seed, in order, as ``{name: (family, τ)}``: the families of :data:`TRAINED_FAMILIES`
    asked for, then the τ sweep's TopoNets that are not among them (:func:`tau_model_name`)."""
    strengths = {
        "baseline": 0.0, "toponet": args.topo_tau, "ws": args.ws_tau, "as": args.as_tau, "topolm": args.topolm_tau,
    }  # fmt: skip
    models = {family: (family, strengths[family]) for family in TRAINED_FAMILIES if family in args.families}
    for tau in sorted(args.taus):
        models.setdefault(tau_model_name(tau, args.topo_tau), ("baseline" if tau == 0 else "toponet", float(tau)))
    return models


def _train(args: ClaimsArguments, name: str, seed: int, files: tuple[str, str], tokenizer: str | None) -> str:
    """Train the model ``name`` of :func:`_trained_models` for ``seed`` into ``seed<s>/<name>/`` (or, with
    ``reuse_trained``, reuse the finished run there); its folder."""
    family, tau = _trained_models(args)[name]
    recipe = dict(
        train_file=files[0], validation_file=files[1], output_dir=os.path.join(args.output_dir, f"seed{seed}", name),
        tau=tau, max_steps=args.max_steps, batch_size=args.train_batch_size, learning_rate=args.learning_rate,
        block_size=args.block_size, seed=seed, model_preset=args.model_preset, vocab_size=args.vocab_size,
        max_eval_blocks=args.eval_blocks, tokenizer=tokenizer, disable_tqdm=not args.progress,
    )  # fmt: skip
    if args.config_overrides:
        recipe["config_overrides"] = args.config_overrides
    if FAMILIES[family].topolm_sites:
        recipe.update(topo_radius=args.topolm_radius, topo_neighbourhoods_per_batch=args.topolm_neighbourhoods)
    if args.device == "cpu":
        recipe["use_cpu"] = True
    return train_family(family, reuse=args.reuse_trained, **recipe)["output_dir"]


def _lora_gain(args: ClaimsArguments, model_dir: str, seed: int) -> float:
    output_dir = os.path.join(model_dir + "-lora")
    metrics_file = os.path.join(output_dir, "lora_metrics.json")
    if args.reuse_trained and os.path.isfile(metrics_file):
        with open(metrics_file) as f:
            return json.load(f)["delta_eval_loss"]
    lora = LoraArguments(
        model_name_or_path=model_dir, train_file=args.lora_train_file, max_train_tokens=args.lora_max_train_tokens,
        block_size=args.block_size, lora_r=args.lora_rank, lora_alpha=2.0 * args.lora_rank,
    )  # fmt: skip
    training = TopoTrainingArguments(
        output_dir=output_dir, tau=0.0, max_steps=args.lora_steps, learning_rate=args.lora_learning_rate,
        per_device_train_batch_size=args.train_batch_size, per_device_eval_batch_size=args.train_batch_size,
        save_strategy="no", report_to="none", seed=seed, use_cpu=args.device == "cpu", disable_tqdm=not args.progress,
    )  # fmt: skip
    return finetune_lora(lora, training)["delta_eval_loss"]


def _planned(args: ClaimsArguments) -> list[str]:
    """The measured models of one seed, in order: trained families and the τ sweep's TopoNets, then post-hoc ones,
    then the baseline on TopoLM's sites (when ``topolm`` is among the families)."""
    names = [*_trained_models(args)] + [f for f in POST_HOC if f in args.families]
    return names + ([BASELINE_AT_TOPOLM_SITES] if "topolm" in args.families else [])


def measure_model(
    args: ClaimsArguments,
    name: str,
    seed: int,
    model_dir: str,
    text_file: str,
    topography: TopoConfig | None = None,
    passages: Sequence[str] | None = None,
    blimp=None,
) -> dict[str, Any]:
    """Measure one model of one seed: the analysis on the held-out text (:func:`~hf_topo.analysis.analyze_model`,
    with Fig. 4A's pruning sweep at the matched fractions and Fig. 4B's downsampling sweep), BLiMP when ``blimp``
    (:func:`hf_topo.blimp.load_blimp`) is given, and for the baseline and the TopoNet the temporal windows (with
    ``passages``) and the LoRA gain (with ``args.lora_train_file``).

    Args:
        name: the model's name among the seed's (:func:`_planned`); a :data:`POST_HOC` name arranges the trained
            model of ``model_dir`` first.
        model_dir: the saved trained model (for a post-hoc model, the one it is made from).
        topography: the layers and sheets to analyse (default: the model's own).

    Returns:
        ``{measure: value}`` (:func:`model_measures`, plus ``blimp``, ``matched_pruning``, ``wall_time_s``, ...).
    """
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if args.device:
        model.to(args.device)
    note: dict[str, Any] = {}
    if name in POST_HOC:
        report = arrange_units(model, objective="topoloss", seed=seed, progress=args.progress)
        note = {"arranged_topoloss_before": report.mean_before, "arranged_topoloss_after": report.mean_after}
    matched = _matched_fractions(args, topographic_layers(model, topography))
    set_seed(seed)
    temporal = args.temporal_windows and name in ("baseline", "toponet") and bool(passages)
    text = load_text_blocks(tokenizer, args.block_size, text_file=text_file)
    analysis = analyze_model(
        model, tokenizer, text, _analysis_settings(args, seed, temporal, matched), label=f"{name} (seed {seed})",
        topography=topography, passages=passages if temporal else None, progress=args.progress,
    )  # fmt: skip
    measures = model_measures(analysis.analysis_summary(), args) | note
    measures["matched_pruning"] = {"factor": list(matched), "fraction": list(matched.values())} if matched else None
    if blimp is not None:
        from ..blimp import evaluate_blimp

        measures["blimp"] = evaluate_blimp(model, tokenizer, data=blimp, progress=False).overall
    del model
    if args.lora_train_file and name in ("baseline", "toponet"):
        measures["lora_delta_eval_loss"] = _lora_gain(args, model_dir, seed)
    measures["wall_time_s"] = time.perf_counter() - start
    return measures


def measure_seed(
    args: ClaimsArguments, seed: int, files: tuple[str, str], done: dict | None = None, blimp=None
) -> dict[str, dict[str, Any]]:
    """Train every model of ``seed`` (the families and the τ sweep), make the post-hoc ones and measure each
    (:func:`measure_model`); ``{model: {measure: value}}``. ``done``: measures already taken for this seed and recipe
    (kept; those models are not measured again). The seed's ``measures.json`` is written after every model, so a
    stopped run resumes with the next one (``reuse_trained``)."""
    measures: dict[str, dict[str, Any]] = dict(done or {})
    passages = None
    if args.temporal_windows and not all(name in measures for name in ("baseline", "toponet")):
        passages = load_passages(files[1], max_passages=args.temporal_max_sequences)
    model_dirs: dict[str, str] = {}

    def trained(name: str) -> str:
        if name not in model_dirs:
            # every model of a seed shares the baseline's tokenizer
            tokenizer = None if name == "baseline" else trained("baseline")
            model_dirs[name] = _train(args, name, seed, files, tokenizer)
        return model_dirs[name]

    for name in _planned(args):
        if name in measures:
            continue
        source = POST_HOC.get(name, "baseline" if name == BASELINE_AT_TOPOLM_SITES else name)
        topography = TopoConfig.from_pretrained(trained("topolm")) if name == BASELINE_AT_TOPOLM_SITES else None
        measures[name] = measure_model(
            args, name, seed, trained(source), files[1], topography=topography, passages=passages, blimp=blimp
        )
        logger.info(
            "seed %d, %s: %s", seed, name, {k: v for k, v in measures[name].items() if not isinstance(v, dict)}
        )
        _save_measures(args, seed, measures)
    return measures


def _measures_file(args: ClaimsArguments, seed: int) -> str:
    return os.path.join(args.output_dir, f"seed{seed}", "measures.json")


def _measure_recipe(args: ClaimsArguments) -> dict:
    """What a seed's measures depend on (not the seeds, the families or τ measured, the verdicts' alpha or the note:
    a run with more families or τ reuses the models measured before)."""
    return {k: v for k, v in args.recipe().items() if k not in ("seeds", "families", "taus", "alpha", "note")}


def _save_measures(args: ClaimsArguments, seed: int, measures: dict) -> dict:
    path = _measures_file(args, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:  # written whole, then renamed: a run stopped here leaves the last file intact
        json.dump({"recipe": _measure_recipe(args), "seed": seed, "measures": json_safe(measures)}, f, indent=2)
    os.replace(path + ".tmp", path)
    return measures


def _cached_measures(args: ClaimsArguments, seed: int) -> dict | None:
    """With ``reuse_trained``, a seed's measures saved by an earlier run of the same recipe (``measures.json``), of
    whichever models that run measured."""
    path = _measures_file(args, seed)
    if not (args.reuse_trained and os.path.isfile(path)):
        return None
    with open(path) as f:
        saved = json.load(f)
    recipe = {k: v for k, v in saved.get("recipe", {}).items() if k != "families"}  # older files list them
    # A setting added to the recipe after the file was written was measured at its default (the TopoLM settings).
    for name, spec in ClaimsArguments.__dataclass_fields__.items():
        if name not in recipe and name in _measure_recipe(args) and spec.default_factory is MISSING:
            recipe[name] = spec.default
    if recipe != _measure_recipe(args) or saved.get("seed") != seed:
        logger.warning("%s was measured with another recipe or seed: measuring seed %d again", path, seed)
        return None
    logger.info("Reusing the measures of seed %d from %s", seed, path)
    return saved["measures"]


# ---- the table -------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if not is_finite(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"


def claims_markdown(result: dict) -> str:
    """The claims table as Markdown (one row per claim)."""
    lines = [
        "| claim | paper (where) | paper's value | compared | ours: a | ours: b | difference (mean ± sd) | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in result["claims"]:
        ours = entry["ours"]
        a, b = ours.get(entry["compared"]["a"], {}), ours.get(entry["compared"]["b"], {})
        lines.append(
            f"| {entry['claim']} | {entry['where']} | {entry['paper_value']} | {entry['expected']} | "
            f"{_fmt(a.get('mean'))} ± {_fmt(a.get('sd'))} | {_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))} | "
            f"{_fmt(ours['mean'])} ± {_fmt(ours['sd'])} (n = {ours['n_seeds']}) | {_fmt(entry.get('p_value'))} | "
            f"**{entry['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def plot_claims(result: dict, path: str | os.PathLike) -> str:
    """One panel per claim: the measure of both models per seed (dots) and their mean (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = result["claims"]
    columns = 4
    rows = math.ceil(len(entries) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, entry in zip(axes.flat, entries, strict=False):
        names = [entry["compared"]["a"], entry["compared"]["b"]]
        for i, name in enumerate(names):
            values = entry["ours"][name]["values"]
            ax.bar(i, entry["ours"][name]["mean"] if values else 0, color="lightgray", width=0.6)
            ax.scatter([i] * len(values), values, color="tab:red" if name != "baseline" else "black", zorder=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{entry['id']}\n{entry['metric']}: {entry['verdict']}", fontsize=9)
        ax.axhline(0, color="gray", linewidth=0.5)
    for ax in list(axes.flat)[len(entries) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def run_claims(args: ClaimsArguments, command: str | None = None) -> dict:
    """Train, measure and judge every claim over ``args.seeds``, and run the τ sweep's designs
    (:func:`~hf_topo.experiments.tau_sweep.tau_sweep_designs`, with ``args.taus``); writes ``paper_claims.json``,
    ``paper_claims.md``, ``paper_claims.png`` and the sweep's figures (``tau_sweep_*.png``) to ``args.output_dir``
    (and the JSON to ``args.output``, the figures beside it); returns the results.

    Every model is trained and measured once: with ``args.reuse_trained`` a run resumes from the models and the
    per-seed ``measures.json`` already in ``args.output_dir`` (written after every model), so a stopped run, or one
    with more seeds, families or τ, only trains and measures what is missing."""
    from .._version import __version__

    check_data_file(args.train_file, "train_file")
    if args.lora_train_file:
        check_data_file(args.lora_train_file, "lora_train_file")
    blimp = None
    if args.blimp_dir:  # read before any model trains: a bad directory fails now
        from ..blimp import load_blimp

        blimp = load_blimp(args.blimp_dir, paradigms=args.blimp_paradigms, limit=args.blimp_limit)
    os.makedirs(args.output_dir, exist_ok=True)
    files = hold_out_lines(args.train_file, args.validation_fraction, os.path.join(args.output_dir, "data"))
    start = time.perf_counter()
    per_seed = []
    for seed in tqdm(args.seeds, desc="seeds", disable=not args.progress):
        cached = _cached_measures(args, seed) or {}
        measures = cached
        if any(name not in cached for name in _planned(args)):
            measures = _save_measures(args, seed, measure_seed(args, seed, files, done=cached, blimp=blimp))
        per_seed.append({name: measures[name] for name in _planned(args) if name in measures})
    import transformers

    result = {
        "command": command,
        "note": args.note,
        "recipe": args.recipe(),
        "seeds": list(args.seeds),
        "verdict_rule": (
            f"paired one-sided t-test over seeds of sign·(a − b) + margin at alpha = {args.alpha}: reproduced if "
            "significant in the claimed direction, contradicted if significant in the other, else not at this scale; "
            "not measured when the measure is missing or fewer than 2 seeds"
        ),
        "claims": [evaluate_claim(claim, per_seed, args.alpha) for claim in CLAIMS],
        "per_seed": {str(seed): measures for seed, measures in zip(args.seeds, per_seed, strict=True)},
        "tau_sweep": (
            tau_sweep_designs(dict(zip(args.seeds, per_seed, strict=True)), args.taus, args.topo_tau, args.alpha)
            if args.taus
            else None
        ),
        "versions": {"hf_topo": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - start,
    }
    result = json_safe(result)
    targets = [os.path.join(args.output_dir, "paper_claims.json")] + ([args.output] if args.output else [])
    for target in targets:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    with open(os.path.join(args.output_dir, "paper_claims.md"), "w") as f:
        f.write(claims_markdown(result))
    plot_claims(result, os.path.join(args.output_dir, "paper_claims.png"))
    if result["tau_sweep"]:
        for directory in {os.path.abspath(os.path.dirname(target)) for target in targets}:
            plot_tau_sweep(result["tau_sweep"], directory)
    logger.info("Claims written to %s", ", ".join(targets))
    return result
