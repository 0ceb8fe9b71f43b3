"""The claims table: every claim of the two papers that a CPU can test, measured over several seeds, TopoNet
(and Weight / Activation Similarity models) against a baseline trained on the same recipe.

The papers: Deb, Deb & Murty, *TopoNets* (ICLR 2025) and Truong & Hasson's Weight / Activation Similarity
(WS / AS). For every seed, :func:`run_claims` trains one model per family on one recipe
(:func:`~hf_topo.experiments.families.train_family`: only the regularizer and its strength differ, the seed sets
the initialization and the data order of all of them), analyses each on held-out text
(:func:`~hf_topo.analysis.analyze_model`), fine-tunes the baseline and the TopoNet with LoRA at ranks 2, 4, 8 on
two domains (A.11: :func:`~hf_topo.experiments.compare_lora.lora_rank_sweep`), measures their and the arranged
baseline's window kinds per layer (Fig. 5B: :func:`~hf_topo.experiments.window_kinds.window_kinds_for_seed`) and
evaluates every claim of :data:`CLAIMS`.

**Verdict rule** (:mod:`hf_topo.experiments.statistics`). A claim compares a measure of model ``a`` with that of
model ``b`` of the same seed (or with a fixed value) in an expected direction. Per seed, the paired difference on
the claim's scale (:data:`SCALES`: raw; ``log`` for perplexities; ``log(1 + Δppl/ppl)`` for damage, the log of
the perplexity ratio perturbed / clean) is ``d_s = f(a_s) − f(b_s)``; the claim is ``sign · d > −margin``.

* **Test**: the two-sided paired t-test of mean ``d`` against its null value (0, or the margin of a
  non-inferiority claim: that one-sided test at α/2 = 2.5 %, ICH E9's convention, which is the two-sided test
  against the margin, so every test of the family is on one two-sided scale).
* **Family**: every measured claim of one table (:data:`FAMILY`); Holm's step-down correction across it
  (:func:`judge_family`).
* **Verdicts**: **reproduced** — Holm-corrected p < α, mean on the claim's side; **contradicted** — Holm-corrected
  p < α on the other side; **not at this scale** — neither; **not measured** — a measure is missing (a family, the
  LoRA, temporal-window or matched-baseline step was not run) or fewer than 2 seeds.
* **Effect size**: mean ``d`` with its 95 % t interval (uncorrected) and Cohen's ``d_z``.

With 3 seeds (2 degrees of freedom) and ~20 claims, the smallest p-value of the family must be below 0.05 / 20: a
claim is reproduced only when every seed agrees very closely. The claims are data (:class:`Claim`); add one to
:data:`CLAIMS` to extend the table. :func:`reevaluate` judges a results JSON's per-seed measures again without
training (``hf-topo claims --from_results``).
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

from ..analysis import AnalysisSettings, analyze_model
from ..analysis.activations import collect_activations, is_output_weight_sheet, topographic_layers
from ..analysis.neighbours import BIMODALITY_THRESHOLD, bimodality_coefficient, neighbour_correlations
from ..analysis.report import json_safe
from ..arrangement import arrange_units
from ..config import TopoConfig
from ..errors import InputError, parameter
from ..evaluation import load_text_blocks
from ..loading import check_data_file
from .compare_lora import LORA_NONINFERIORITY_MARGIN
from .families import FAMILIES, train_family
from .recipes import hold_out_lines
from .statistics import VERDICTS, holm_adjust, is_finite, paired_test, seed_statistics, verdict
from .tau_sweep import DEFAULT_TAUS, matched_pruning_fraction, plot_tau_sweep, tau_model_name, tau_sweep_designs

__all__ = [
    "portable_command",
    "write_results",
    "CLAIMS",
    "TRAINED_FAMILIES",
    "VERDICTS",
    "Claim",
    "ClaimsArguments",
    "evaluate_claim",
    "evaluate_claims",
    "judge_family",
    "baseline_save_steps",
    "matched_baseline_measures",
    "measure_model",
    "measure_seed",
    "model_measures",
    "neighbour_measures",
    "reevaluate",
    "run_claims",
    "verdict_counts",
    "verdict_rule",
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
            `"n_layer=4,n_embd=128,n_head=4"`: the demo's 4 × 128, small enough for the τ sweep's 27 trained models
            to fit the CPU budget of docs/claims.md; the release before the sweep used 6 × 256).
        vocab_size, block_size, max_steps, train_batch_size, learning_rate: the pretraining recipe.
        topo_tau, ws_tau, as_tau, topolm_tau: strengths of TopoLoss, Weight / Activation Similarity and TopoLM's loss.
        topolm_radius, topolm_neighbourhoods: TopoLM's neighbourhoods (radius 5 and 5 per batch, as TopoLM; the radius
            is clipped to the largest that fits the hidden-size sheet: :func:`topolm_radius`).
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
        temporal_windows (`bool`, defaults to `True`), temporal_max_delta (defaults to 20: the reference's 21
            lags), temporal_max_sequences (defaults to 100, the floor of Fig. 5B's shares), temporal_window_settings
            (other :data:`~hf_topo.experiments.window_kinds.WINDOW_SETTINGS` as `key=value,...`): Fig. 5B's window
            kinds per layer of the baseline, the TopoNet and the arranged baseline
            (:func:`~hf_topo.experiments.window_kinds.window_kinds_for_seed`, cached in `seed<s>/window_kinds/`).
    LoRA, A.11's rank × domain sweep of the baseline and the TopoNet
    (:func:`~hf_topo.experiments.compare_lora.lora_rank_sweep`, cached in `seed<s>/lora_sweep/`):
        lora_train_file (`str`, optional): the first domain's text (A.11: Shakespeare).
        lora_code (`bool`, defaults to `False`): the second domain, Python code
            (:func:`~hf_topo.experiments.compare_lora.write_code_corpus` into `<output_dir>/data/code.txt`); without
            either domain the LoRA claims are not measured.
        lora_ranks (defaults to 2, 4, 8), lora_steps, lora_max_train_tokens, lora_learning_rate.
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
        default="n_layer=4,n_embd=128,n_head=4", metadata={"help": "Preset overrides (4 × 128 by default)."}
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
    topolm_radius: int = field(
        default=5,
        metadata={
            "help": "TopoLM's neighbourhood radius (TopoLM: 5), clipped to the largest that fits the hidden-size "
            "sheet (4 on the default 4 × 128 recipe's 8 × 16 sheet)."
        },
    )
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
    temporal_windows: bool = field(
        default=True,
        metadata={"help": "Fig. 5B: window kinds per layer of the baseline, TopoNet and arranged baseline."},
    )
    temporal_max_delta: int = field(
        default=20, metadata={"help": "Longest word distance of the windows (20: the reference's 21 lags)."}
    )
    temporal_max_sequences: int = field(
        default=100, metadata={"help": "Sequences for the windows and for the yoking (the floor: 100)."}
    )
    temporal_window_settings: str | None = field(
        default=None,
        metadata={"help": "Other window settings as key=value,... (e.g. sequence_words=40; see WINDOW_SETTINGS)."},
    )
    lora_train_file: str | None = field(
        default=None, metadata={"help": "A.11's first LoRA domain (Shakespeare): fine-tuning text of another domain."}
    )
    lora_code: bool = field(
        default=False,
        metadata={"help": "A.11's second LoRA domain: Python code from the standard library (<output_dir>/data)."},
    )
    lora_ranks: list[int] = field(
        default_factory=lambda: [2, 4, 8], metadata={"help": "LoRA ranks of A.11's sweep (alpha = 2 × rank)."}
    )
    lora_steps: int = field(default=50, metadata={"help": "LoRA optimizer steps per run."})
    lora_max_train_tokens: int = field(default=100_000, metadata={"help": "LoRA training tokens per domain."})
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
            "topolm_neighbourhoods", "temporal_max_delta", "temporal_max_sequences",
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
        if not self.lora_ranks or any(rank < 1 for rank in self.lora_ranks):
            raise InputError(f"{parameter('lora_ranks', self.lora_ranks)}: give LoRA ranks >= 1 (e.g. 2 4 8).")
        self.window_settings()  # a malformed temporal_window_settings fails now, not after training

    def window_settings(self) -> dict[str, Any]:
        """The settings of :func:`~hf_topo.experiments.window_kinds.window_kinds_for_seed`: `temporal_max_delta`,
        `temporal_max_sequences` (for the windows and the yoking) and `temporal_window_settings`."""
        from .window_kinds import WINDOW_SETTINGS

        settings: dict[str, Any] = {
            "max_delta": self.temporal_max_delta,
            "max_sequences": self.temporal_max_sequences,
            "yoking_sequences": self.temporal_max_sequences,
        }
        for item in (self.temporal_window_settings or "").split(","):
            if not item.strip():
                continue
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in WINDOW_SETTINGS or not value.strip():
                raise InputError(
                    f"{parameter('temporal_window_settings', self.temporal_window_settings)}: {item.strip()!r} is not "
                    f"key=value with a key of {sorted(WINDOW_SETTINGS)}."
                )
            default = WINDOW_SETTINGS[key]
            try:
                settings[key] = (
                    value.strip().lower() in ("1", "true", "yes")
                    if isinstance(default, bool)
                    else (type(default)(value.strip()))
                )
            except ValueError as error:
                raise InputError(
                    f"{parameter('temporal_window_settings', self.temporal_window_settings)}: {key} must be of type "
                    f"{type(default).__name__}, got {value.strip()!r}."
                ) from error
        return settings

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

#: The scales a claim compares its measure on (:attr:`Claim.scale`): the measure itself, its log (a ratio of two
#: models' values, e.g. perplexities), or ``log(1 + v)`` of a relative Δ perplexity ``v`` (the log of the perplexity
#: ratio perturbed / clean, i.e. the rise of the mean per-token loss in nats: a damage factor, defined also for the
#: small negative Δ of a perturbation that helps).
SCALES = {"raw": "", "log": "log ", "log1p": "log(1 + ·) "}
#: The models whose neighbour-correlation structure :func:`measure_seed` measures (:func:`neighbour_measures`).
NEIGHBOUR_MODELS = ("baseline", "toponet", "ws", "as")
#: The name of the family of tests of one claims table (every measured claim of it).
FAMILY = "every measured claim of this table"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper as a comparison of a measure between two models of the same seed (or of one model with
    a fixed value).

    Attributes:
        id: short name (the key in the results).
        claim: what the paper says, in a sentence.
        source, where, paper_value: the paper, its figure or section, and the value or direction it reports.
        metric: the per-model measure (a key of :func:`model_measures`' output).
        a, b: the models compared (of :data:`TRAINED_FAMILIES`, :data:`POST_HOC`, :data:`BASELINE_AT_TOPOLM_SITES`
            or :data:`MATCHED_BASELINES`); ``b`` is ``None`` for a claim about ``a`` against :attr:`threshold`.
        sign: +1 when the claim is ``a > b``, −1 when ``a < b``.
        scale: ``"raw"``, ``"log"`` or ``"log1p"`` (:data:`SCALES`): the scale of the paired difference.
        margin: ≥ 0; the claim is ``sign · d > −margin`` on the claim's scale: 0 for a strict direction, > 0 for a
            non-inferiority ("no large cost") or non-superiority ("not smooth") claim, with :attr:`margin_reason`.
        metric_b: the measure read from ``b`` when it differs from ``metric`` (two measures of one model, e.g. the
            paper's downsampled layer against the one with per-unit gains).
        threshold: the fixed value ``a`` is compared with (one-sample claims, e.g. Sarle's 5/9), instead of ``b``.
        margin_reason: where the margin comes from (the paper's own numbers where it gives them).
        design: how the measurement answers the claim (what is paired, what is controlled), for the results.
        uncontrolled_b: a model the claim would naively compare with (the final baseline of a robustness claim whose
            ``b`` is a perplexity-matched one): that comparison is reported beside, outside the family, unjudged.
    """

    id: str
    claim: str
    source: str
    where: str
    paper_value: str
    metric: str
    a: str
    b: str | None
    sign: int
    scale: str = "raw"
    margin: float = 0.0
    metric_b: str | None = None
    threshold: float | None = None
    margin_reason: str = ""
    design: str = "paired over seeds (same initialization seed and data order), one model per family and seed"
    uncontrolled_b: str | None = None

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Claim {self.id!r}: scale={self.scale!r} must be one of {sorted(SCALES)}.")
        if (self.b is None) == (self.threshold is None):
            raise ValueError(f"Claim {self.id!r}: give either a model b or a threshold, not both or neither.")
        if self.margin and not self.margin_reason:
            raise ValueError(f"Claim {self.id!r}: a margin needs its reason (margin_reason).")

    @property
    def b_label(self) -> str:
        """The key of ``b``'s values in a table entry (``b`` itself, ``b:metric_b`` when ``a`` is ``b``, or
        ``threshold``)."""
        if self.b is None:
            return "threshold"
        return f"{self.b}:{self.metric_b}" if self.metric_b and self.b == self.a else self.b

    def transform(self, value: float) -> float | None:
        """``value`` on the claim's scale (``None`` where the scale does not define it)."""
        if self.scale == "log":
            return math.log(value) if value > 0 else None
        if self.scale == "log1p":
            return math.log1p(value) if value > -1 else None
        return value

    def difference(self) -> str:
        """The paired difference ``d`` in words."""

        def scaled(measure: str) -> str:
            return {"log": f"log {measure}", "log1p": f"log(1 + {measure})"}.get(self.scale, measure)

        b = f"{self.threshold:.4g}" if self.b is None else scaled(f"{self.metric_b or self.metric}({self.b})")
        return f"{scaled(f'{self.metric}({self.a})')} − {b}"

    def expected(self) -> str:
        relation = ">" if self.sign > 0 else "<"
        if self.b is None:
            return f"{self.metric}({self.a}) {relation} {self.threshold:.4g}"
        if self.metric_b:
            return f"{self.metric}({self.a}) {relation} {self.metric_b}({self.b})"
        if self.margin:
            scale = f" on the {self.scale} scale" if self.scale != "raw" else ""
            bound = f"{'+' if self.sign < 0 else '−'} {self.margin:.4g}"
            return f"{self.metric}: {self.a} {relation} {self.b} {bound}{scale} (margin)"
        return f"{self.metric}: {self.a} {relation} {self.b}"


_TOPONETS = "Deb, Deb & Murty, TopoNets (ICLR 2025)"
_TH = "Truong & Hasson, Beyond topography (Weight / Activation Similarity)"
_TOPOLM = "Rathi et al., TopoLM (ICLR 2025)"
_OURS = "hf_topo (not a paper claim)"
#: The models a robustness claim of Weight / Activation Similarity compares with: the baseline's own training
#: checkpoint whose clean perplexity is closest to that model's (within 5 %), see :func:`matched_baseline_measures`.
MATCHED_BASELINES = {"baseline_matched_ws": "ws", "baseline_matched_as": "as"}

_NO_LARGE_COST = (
    "5 % perplexity, on the log scale (log 1.05). TopoNets gives no language-model perplexity gap in numbers "
    "(Fig. 2B: BLiMP 'comparable to the baseline'); its reported relative performance drops are 3 % (ResNet-18 with "
    "TDANN's 8 topographic layers, §3.1 / A.3), which it calls small, and 6 % for TDANN, which it presents as the "
    "cost to beat; 5 % lies between them"
)
_NOT_SMOOTH = (
    "0.1 in Moran's I over the baseline's (the paper gives no number; Moran's I is ≈ 0 for spatially random maps "
    "and ≈ 1 for smooth ones, so 0.1 is a tenth of the way to smooth)"
)
_MATCHED = (
    "paired over seeds; b is the baseline's own training checkpoint whose clean perplexity is within 5 % of the "
    "regularized model's (the 25–44 % worse perplexity of AS would otherwise confound robustness); the damage is "
    "log(perturbed / clean perplexity) of each model"
)

_LORA = (
    "paired over seeds; per seed, LoRA on the baseline and the TopoNet at every rank (--lora_ranks, A.11: 2, 4, 8) "
    "on every domain (--lora_train_file, Shakespeare in A.11, and --lora_code, Python code), one recipe; the measure "
    "is the gain log(validation ppl before / after) averaged over ranks and domains"
)
_LORA_MARGIN = (
    "5 % perplexity (log 1.05) on the gain: A.11 states no number; its Fig. 12 shows the TopoNets' gains larger "
    "than the baseline's at every rank and domain, and 5 % is the allowance of the table's other no-large-cost "
    "claims (hf_topo.experiments.compare_lora.LORA_NONINFERIORITY_MARGIN)"
)
_WINDOWS = (
    "paired over seeds; integration windows by word swaps at the reference's 21 lags and ≥ 100 sequences, every "
    "unit fitted (hf_topo.experiments.window_kinds); Moran's I of the maps, mean over the topographic layers (and the "
    "kinds present); the arranged baseline is the baseline's fits permuted by its arrangement"
)
_WINDOW_TREND = (
    "one sample over seeds against 0: the share of the paper's kind in the middle layers minus its share in the first "
    "layer (hf_topo.experiments.window_kinds, 21 lags, ≥ 100 sequences)"
)

#: Every claim the table measures, one family of tests (Holm-corrected together). Relative Δ perplexity = Δ
#: perplexity / unperturbed perplexity of the same model, compared as ``log(1 + Δ/ppl)`` (:data:`SCALES`).
CLAIMS: tuple[Claim, ...] = (
    Claim("smoothness", "TopoNets are topographic: correlation falls off with distance on the sheet far more than "
          "in the baseline.", _TOPONETS, "§3.1, Fig. 2B (GPT-Neo-125M, NanoGPT)",
          "TopoNets' smoothness well above the baseline's at every τ (read off Fig. 2B)", "smoothness",
          "toponet", "baseline", +1),
    Claim("robust_smoothness", "The same, with the robust near-minus-far smoothness (no sparse bin sets it).",
          _TOPONETS, "§3.1 (our robust variant of the smoothness of §2.3)", "as smoothness", "robust_smoothness",
          "toponet", "baseline", +1),
    Claim("morans_i", "TopoNet activation maps are spatially autocorrelated.", _OURS,
          "Truong & Hasson's measure (Moran's I of activation maps) applied to TopoNets; the TopoNets paper measures "
          "smoothness (§2.3), not Moran's I", "higher than the baseline (≈ 0)", "morans_i", "toponet", "baseline", +1),
    Claim("perplexity_cost", "TopoLoss induces topography without a large loss of task performance.", _TOPONETS,
          "§3.1, Fig. 2B; A.3", "BLiMP comparable to the baseline (GPT-Neo-125M); ResNet-18 drop 3 %",
          "perplexity", "toponet", "baseline", -1, "log", math.log(1.05), margin_reason=_NO_LARGE_COST),
    Claim("effective_dimensionality", "At one τ, the TopoNet's effective dimensionality is below its baseline's.",
          _TOPONETS, "§3.2, Fig. 3B tests a correlation across models (the τ sweep's design); A.9 shows it rising "
          "from the baseline to τ = 1 — a paired test at one τ is not the paper's design",
          "dimensionality falls as smoothness rises (P < 0.05 across models)", "effective_dimensionality",
          "toponet", "baseline", -1),
    Claim("pruning", "TopoNets are more resilient to L1 unstructured pruning.", _TOPONETS, "§3.3, Fig. 4A",
          "smaller performance drop than the baseline at every pruned fraction", "pruning_relative_delta",
          "toponet", "baseline", -1, "log1p"),
    Claim("downsampling", "TopoNets are more resilient to downsampling of their topographic layers.", _TOPONETS,
          "§3.3, Fig. 4B, A.10",
          "performance kept from 125.6M to 102.3M parameters (GPT-Neo-125M; our count of it is 125.2M)",
          "downsampling_relative_delta", "toponet", "baseline", -1, "log1p"),  # the paper's layer, without gains
    Claim("lora_gain", "TopoNets gain more from LoRA fine-tuning than the baseline.", _TOPONETS,
          "A.11, Fig. 11–12 (NanoGPT, ranks 2/4/8 on Shakespeare and Python code)",
          "consistently larger Δ validation loss for TopoNets", "lora_gain_mean", "toponet", "baseline", +1,
          design=_LORA),  # the gain log(ppl before / ppl after) is already a log perplexity ratio
    Claim("lora_noninferiority", "TopoNets adapt to a new domain with LoRA as well as the baseline (no smaller "
          "gain).", _TOPONETS, "A.11, Fig. 11–12 (ranks 2/4/8 on Shakespeare and Python code)",
          "TopoNets' gain at least the baseline's at every rank and domain", "lora_gain_mean", "toponet", "baseline",
          +1, margin=LORA_NONINFERIORITY_MARGIN, margin_reason=_LORA_MARGIN, design=_LORA),
    Claim("temporal_clusters", "Temporal integration window parameters cluster on the TopoNet's sheet.", _TOPONETS,
          "§3.4, Fig. 5B, A.7", "clustered power-law / exponential / sentence-yoked maps",
          "temporal_c_morans_i", "toponet", "baseline", +1, design=_WINDOWS),
    Claim("temporal_exponential_early", "The TopoNet's exponential windows are most common in its first layers.",
          _TOPONETS, "§3.4, Fig. 5B", "exponential windows early, fewer in the middle layers",
          "temporal_exponential_change", "toponet", None, -1, threshold=0.0, design=_WINDOW_TREND),
    Claim("temporal_power_law_middle", "The TopoNet's power-law windows are most common in its middle layers.",
          _TOPONETS, "§3.4, Fig. 5B", "power-law windows in the middle layers, fewer in the first",
          "temporal_power_law_change", "toponet", None, +1, threshold=0.0, design=_WINDOW_TREND),
    Claim("temporal_kind_clusters", "The kinds of temporal windows form clusters on the TopoNet's sheet.", _TOPONETS,
          "§3.4, Fig. 5B, Fig. 8", "clustered exponential / power-law maps", "temporal_kind_morans_i", "toponet",
          "baseline", +1, design=_WINDOWS),
    Claim("temporal_kind_clusters_vs_arranged", "The TopoNet's kind maps are more clustered than a post-hoc "
          "arrangement of the baseline's units gives.", _OURS, "the arrangement control of Fig. 5B", "–",
          "temporal_kind_morans_i", "toponet", "arranged_baseline", +1, design=_WINDOWS),
    Claim("ws_weight_noise", "Weight Similarity improves robustness to weight perturbation.", _TH,
          "weight robustness", "smaller drop than without the regularizer", "noise_relative_delta", "ws",
          "baseline_matched_ws", -1, "log1p", design=_MATCHED, uncontrolled_b="baseline"),
    Claim("as_weight_noise", "Activation Similarity improves robustness to weight perturbation.", _TH,
          "weight robustness", "smaller drop than without the regularizer", "noise_relative_delta", "as",
          "baseline_matched_as", -1, "log1p", design=_MATCHED, uncontrolled_b="baseline"),
    Claim("ws_input_robustness", "Weight Similarity improves robustness to input perturbation.", _TH,
          "input robustness (pixel noise; here: random token substitution)", "smaller drop",
          "substitution_relative_delta", "ws", "baseline_matched_ws", -1, "log1p", design=_MATCHED,
          uncontrolled_b="baseline"),
    Claim("as_input_robustness", "Activation Similarity improves robustness to input perturbation.", _TH,
          "input robustness (pixel noise; here: random token substitution)", "smaller drop",
          "substitution_relative_delta", "as", "baseline_matched_as", -1, "log1p", design=_MATCHED,
          uncontrolled_b="baseline"),
    Claim("ws_vs_as_weight_maps", "Weight Similarity gives smooth weight maps; Activation Similarity does not.",
          _TH, "WS vs AS maps", "WS smooth, AS not", "weight_smoothness", "ws", "as", +1),
    Claim("ws_smooth_activation_maps", "Weight Similarity produces smooth topographies.", _TH,
          "findings (Moran's I of activation maps, their measure)", "WS smooth", "morans_i", "ws", "baseline", +1),
    Claim("ws_correlated_neighbours", "Weight Similarity gives correlated neighbourhoods.", _TH,
          "findings (neighbour correlations)", "WS: correlated neighbourhoods", "neighbour_correlation_mean", "ws",
          "baseline", +1),
    Claim("as_bimodal_neighbours", "Activation Similarity gives a bimodal neighbour-correlation structure.", _TH,
          "findings (neighbour correlations)", "AS: bimodal correlation structure", "neighbour_bimodality", "as",
          None, +1, threshold=BIMODALITY_THRESHOLD,
          design="one sample over seeds: Sarle's bimodality coefficient of the correlations of every neighbour pair "
          "(3 × 3) on the sheet, mean over the topographic layers, against 5/9 (a uniform distribution's)"),
    Claim("as_not_smooth", "Activation Similarity's structure lacks spatial smoothness.", _TH,
          "findings (Moran's I of activation maps, their measure)", "AS: no spatial smoothness", "morans_i", "as",
          "baseline", -1, margin=0.1, margin_reason=_NOT_SMOOTH),
    Claim("topolm_morans_i", "TopoLM's spatial-correlation loss makes activation maps spatially smooth on its sheet.",
          _TOPOLM, "§3, Fig. 2 (smooth, clustered activation maps)", "clustered maps; none in the baseline",
          "morans_i", "topolm", BASELINE_AT_TOPOLM_SITES, +1),
    Claim("topolm_smoothness", "The same, as correlation falling off with distance on the sheet.", _TOPOLM,
          "§3 (our smoothness of TopoNets §2.3 on TopoLM's sites)", "higher than the baseline on the same sites",
          "smoothness", "topolm", BASELINE_AT_TOPOLM_SITES, +1),
    Claim("topolm_perplexity_cost", "TopoLM's topography comes at little cost in language modelling.", _TOPOLM,
          "§3, Table 1 (validation loss close to the non-topographic control)", "small cost", "perplexity",
          "topolm", "baseline", -1, "log", math.log(1.05),
          margin_reason="5 % perplexity (log 1.05), the margin of the TopoNets claim, for one table"),
    Claim("arranged_smoothness", "A post-hoc arrangement of a baseline's MLP units on the sheet (the same function) "
          "makes its activations topographic.", _OURS, "the arrangement control (docs/arrange.md)",
          "–", "smoothness", "arranged_baseline", "baseline", +1),
    Claim("arranged_vs_toponet_smoothness", "A TopoNet is more topographic than the arranged baseline.", _OURS,
          "the arrangement control", "–", "smoothness", "toponet", "arranged_baseline", +1),
    Claim("arranged_downsampling", "The arrangement alone gives a baseline some downsampling resilience.", _OURS,
          "the arrangement control", "–", "downsampling_relative_delta", "arranged_baseline", "baseline", -1,
          "log1p"),
    Claim("arranged_vs_toponet_downsampling", "A TopoNet resists downsampling better than the arranged baseline: "
          "trained topography is more than a permutation.", _OURS, "the arrangement control", "–",
          "downsampling_relative_delta", "toponet", "arranged_baseline", -1, "log1p"),
    Claim("gains_downsampling", "Per-unit gains make a TopoNet's downsampling cheaper than the paper's layer.", _OURS,
          "downsampling with gains (docs/downsampling.md)", "–", "downsampling_gains_relative_delta", "toponet",
          "toponet", -1, "log1p", metric_b="downsampling_relative_delta",
          design="paired over seeds: two measures of one model"),
)  # fmt: skip


def _pairs(
    claim: Claim, per_seed: Sequence[dict[str, dict[str, float]]], b: str | None = None
) -> list[tuple[float, float]]:
    """Per seed where both are measured and defined on the claim's scale: ``(a, b)`` raw values (``b`` the threshold
    for a one-sample claim)."""
    b = claim.b if b is None else b
    pairs = []
    for seed_measures in per_seed:
        a_value = seed_measures.get(claim.a, {}).get(claim.metric)
        b_value = claim.threshold if b is None else seed_measures.get(b, {}).get(claim.metric_b or claim.metric)
        if not (is_finite(a_value) and is_finite(b_value)):
            continue
        if claim.transform(a_value) is None or (b is not None and claim.transform(b_value) is None):
            continue
        pairs.append((float(a_value), float(b_value)))
    return pairs


def _differences(claim: Claim, pairs: list[tuple[float, float]], one_sample: bool) -> list[float]:
    return [claim.transform(a) - (b if one_sample else claim.transform(b)) for a, b in pairs]


def _test_description(claim: Claim, n: int) -> str:
    kind = "one-sample" if claim.b is None else "paired"
    null = "0" if not claim.margin else f"the margin ({'+' if claim.sign < 0 else '−'}{claim.margin:.4g})"
    what = "margin claim (non-inferiority): " if claim.margin else ""
    return (
        f"{what}two-sided {kind} t-test of mean d = {null} over {n} seeds (df {max(n - 1, 0)}); "
        f"d = {claim.difference()}"
    )


def evaluate_claim(claim: Claim, per_seed: Sequence[dict[str, dict[str, float]]], alpha: float = 0.05) -> dict:
    """A claim's entry in the table, judged alone (a family of one: the Holm-corrected p-value is the raw one).
    Tables judge their claims together with :func:`evaluate_claims`.

    The entry: the claim and its source; ``design``, ``test``, ``scale``, ``difference`` (``d`` in words),
    ``margin`` (+ ``margin_reason``), ``null_value``; ``ours`` (the per-seed ``d``: ``n_seeds``, ``mean``, ``sd``,
    ``values``; and both models' raw values); ``effect`` (mean ``d`` with its 95 % t interval and Cohen's ``d_z``);
    ``t``, ``df``, ``p_value`` (two-sided), ``p_one_sided`` (in the claim's direction), ``p_holm``, ``verdict``; and
    ``uncontrolled`` (the comparison with :attr:`Claim.uncontrolled_b`, unjudged) when the claim has one.

    Args:
        per_seed: for each seed, ``{model: {metric: value}}`` (:func:`measure_seed`).
    """
    return judge_family([_unjudged_entry(claim, per_seed)], alpha, family=f"{claim.id} alone")[0]


def _unjudged_entry(claim: Claim, per_seed: Sequence[dict[str, dict[str, float]]]) -> dict:
    one_sample = claim.b is None
    pairs = _pairs(claim, per_seed)
    differences = _differences(claim, pairs, one_sample)
    test = paired_test(differences, claim.sign, claim.margin)
    ours: dict[str, Any] = {
        **seed_statistics(differences),
        "difference": claim.difference(),
        claim.a: seed_statistics([a for a, _ in pairs]),
    }
    if not one_sample:
        ours[claim.b_label] = seed_statistics([b for _, b in pairs])
    entry: dict[str, Any] = {
        "id": claim.id,
        "claim": claim.claim,
        "paper": claim.source,
        "where": claim.where,
        "paper_value": claim.paper_value,
        "metric": claim.metric,
        "expected": claim.expected(),
        "compared": {"a": claim.a, "b": claim.b_label},
        "design": claim.design,
        "test": _test_description(claim, len(differences)),
        "scale": claim.scale,
        "difference": claim.difference(),
        "sign": claim.sign,
        "margin": claim.margin,
        "margin_reason": claim.margin_reason or None,
        "threshold": claim.threshold,
        "null_value": test["null_value"],
        "ours": ours,
        "effect": {key: test[key] for key in ("mean_difference", "ci_low", "ci_high", "confidence", "cohens_dz")},
        "t": test["t"],
        "df": test["df"],
        "p_value": test["p_value"],
        "p_one_sided": test["p_one_sided"],
        "direction": test["direction"],
    }
    if claim.scale == "log1p" and not one_sample and pairs and all(a > 0 and b > 0 for a, b in pairs):
        ratio = paired_test([math.log(a / b) for a, b in pairs], claim.sign)
        if ratio["mean_difference"] is not None:
            entry["damage_ratio"] = {
                "note": "sensitivity, not judged: the ratio of the relative damages a / b (geometric mean over "
                "seeds, its 95 % interval and two-sided p on the log scale)",
                "geometric_mean": math.exp(ratio["mean_difference"]),
                "ci_low": math.exp(ratio["ci_low"]),
                "ci_high": math.exp(ratio["ci_high"]),
                "t": ratio["t"],
                "p_value": ratio["p_value"],
            }
    if claim.uncontrolled_b:
        naive = _pairs(claim, per_seed, b=claim.uncontrolled_b)
        naive_test = paired_test(_differences(claim, naive, False), claim.sign, claim.margin)
        clean = [
            math.log(s[claim.a]["perplexity"] / s[claim.uncontrolled_b]["perplexity"])
            for s in per_seed
            if is_finite(s.get(claim.a, {}).get("perplexity"))
            and is_finite(s.get(claim.uncontrolled_b, {}).get("perplexity"))
        ]
        entry["uncontrolled"] = {
            "b": claim.uncontrolled_b,
            "note": "not judged: the clean perplexities differ (log ratio below), which confounds the damage",
            "clean_log_perplexity_ratio": seed_statistics(clean),
            **{key: naive_test[key] for key in ("n", "mean_difference", "ci_low", "ci_high", "t", "p_value")},
        }
    return entry


def judge_family(entries: list[dict], alpha: float = 0.05, family: str = FAMILY) -> list[dict]:
    """Judge one family of tests together: Holm's correction of their two-sided ``p_value`` (the entries without
    one are not measured and not in the family), then each entry's verdict from its ``p_holm`` and ``direction``
    (+1: on the claim's side; :func:`~hf_topo.experiments.statistics.verdict`). Adds ``p_holm``, ``verdict`` and
    ``family`` to each entry (in place) and returns the entries. Entries made elsewhere (e.g. the correlation
    designs of the τ sweep) join a family with their own ``p_value`` and ``direction``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be between 0 and 1 (e.g. 0.05).")
    adjusted = holm_adjust([entry.get("p_value") for entry in entries])
    size = sum(p is not None for p in adjusted)
    for entry, p_holm in zip(entries, adjusted, strict=True):
        entry["p_holm"] = p_holm
        entry["verdict"] = verdict(p_holm, entry.get("direction", 0), alpha)
        entry["family"] = {"name": family, "size": size, "correction": "Holm", "alpha": alpha}
    return entries


def evaluate_claims(
    claims: Sequence[Claim], per_seed: Sequence[dict[str, dict[str, float]]], alpha: float = 0.05,
    family: str = FAMILY,
) -> list[dict]:  # fmt: skip
    """Every claim's entry (:func:`evaluate_claim`), judged as one family: Holm's correction across every measured
    claim of ``claims``."""
    return judge_family([_unjudged_entry(claim, per_seed) for claim in claims], alpha, family)


def verdict_rule(alpha: float) -> dict[str, Any]:
    """The verdict rule in words, for the results JSON."""
    return {
        "test": "per claim, a two-sided paired t-test over seeds of the mean difference d = f(a) − f(b) on the "
        "claim's scale (raw; log for perplexity ratios; log(1 + relative Δ perplexity) for damage) against its "
        "null value: 0, or for a non-inferiority claim its margin (each side at alpha / 2, as a 95 % interval)",
        "family": f"{FAMILY}: Holm's step-down correction of the two-sided p-values across it",
        "alpha": alpha,
        "verdicts": "reproduced: Holm-corrected p < alpha on the claim's side of the null value; contradicted: "
        "Holm-corrected p < alpha on the other side; not at this scale: neither; not measured: a measure is "
        "missing or fewer than 2 seeds",
        "effect_size": "mean d with its 95 % t interval (uncorrected), Cohen's d_z = (mean d − null) / sd d",
    }


def reevaluate(results: dict, alpha: float | None = None, claims: Sequence[Claim] = CLAIMS) -> dict:
    """Judge the claims again from a results JSON's per-seed measures (``hf-topo claims --from_results``), without
    training or measuring: the same ``per_seed``, the current :data:`CLAIMS` and rule. ``alpha`` defaults to the
    results' own. Claims whose measures the results lack are "not measured". The ``"tau_sweep"`` block is computed
    again from the same measures (:func:`~hf_topo.experiments.tau_sweep.tau_sweep_designs`, with the recipe's
    ``taus`` and ``topo_tau``), so every design follows the current rule too."""
    if "per_seed" not in results or "seeds" not in results:
        raise InputError(
            "The results have no per-seed measures ('per_seed' and 'seeds'): give a paper_claims.json written by "
            "`hf-topo claims`."
        )
    alpha = alpha if alpha is not None else results.get("recipe", {}).get("alpha", 0.05)
    per_seed = [results["per_seed"][str(seed)] for seed in results["seeds"]]
    updated = dict(results)
    updated["verdict_rule"] = verdict_rule(alpha)
    updated["claims"] = evaluate_claims(claims, per_seed, alpha)
    updated["verdict_counts"] = verdict_counts(updated["claims"])
    recipe = results.get("recipe", {})
    if recipe.get("taus") and recipe.get("topo_tau") is not None:
        by_seed = {seed: results["per_seed"][str(seed)] for seed in results["seeds"]}
        updated["tau_sweep"] = tau_sweep_designs(by_seed, recipe["taus"], recipe["topo_tau"], alpha)
    return json_safe(updated)


def verdict_counts(entries: Sequence[dict]) -> dict[str, int]:
    """How many claims got each verdict, in the order of :data:`VERDICTS`."""
    return {name: sum(entry["verdict"] == name for entry in entries) for name in VERDICTS}


# ---- measuring one model, one seed -----------------------------------------------------------------------------


def _relative_delta(summary, kind: str, x: float) -> float | None:
    delta = summary.delta_perplexity(kind, x)
    return None if delta is None or not summary.perplexity else delta / summary.perplexity


def _curve(summary, kind: str) -> dict[str, list] | None:
    """A sweep's perturbed points as ``{"x", "perplexity_ratio" (perturbed / unperturbed), "parameters_kept"}``."""
    sweep = summary.sweeps.get(kind)
    if sweep is None:
        return None
    points = [p for p in sweep.perturbed_points() if p.score - p.delta > 0]
    return {
        "x": [p.x for p in points],
        "perplexity_ratio": [p.score / (p.score - p.delta) for p in points],
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
    args: ClaimsArguments, seed: int, temporal: bool, matched: dict[float, float] | None = None
) -> AnalysisSettings:
    """The analysis of every model: the claims' perturbation strengths, Fig. 4A's pruning sweep with the fractions
    ``matched`` to each φ (:func:`_matched_fractions`) and Fig. 4B's downsampling factors."""
    matched = matched or {}
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


def neighbour_measures(model, text, args: ClaimsArguments, topography: TopoConfig | None = None) -> dict[str, float]:
    """Truong & Hasson's neighbour-correlation structure of a model's topographic layers on held-out text: the mean
    Pearson ``r`` of every 3 × 3 neighbour pair's activations (``neighbour_correlation_mean``) and Sarle's
    bimodality coefficient of those ``r`` (``neighbour_bimodality``), each averaged over the layers
    (:mod:`hf_topo.analysis.neighbours`); the first ``args.max_tokens`` tokens, as the other activation measures."""
    layers = topographic_layers(model, topography)
    activations = collect_activations(model, text, layers, max_samples=args.max_tokens, progress=False)
    means, coefficients = [], []
    for layer in layers:
        r = neighbour_correlations(activations[layer.name], layer.sheet)
        r = r[~r.isnan()]
        if r.numel() >= 4 and float(r.std()) > 0:
            means.append(float(r.mean()))
            coefficients.append(bimodality_coefficient(r))
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return {"neighbour_correlation_mean": mean(means), "neighbour_bimodality": mean(coefficients)}


#: How close the clean perplexity of a matched baseline must be to the regularized model's: within 5 %.
MATCH_TOLERANCE = math.log(1.05)


def matched_baseline_measures(
    args: ClaimsArguments, seed: int, baseline_dir: str, text, measures: dict[str, dict]
) -> dict[str, dict]:
    """The perplexity-matched baselines of the Weight / Activation Similarity robustness claims
    (:data:`MATCHED_BASELINES`).

    A regularizer that makes a model worse (AS: 25–44 % higher perplexity at this scale) can make it look robust:
    a worse model has less to lose. The control chosen here is **a baseline of matched clean perplexity**: among the
    final baseline and its training checkpoints (``<baseline>/checkpoint-*``, saved when the baseline trains with
    ``save_strategy="steps"``, as :func:`run_claims` trains it every :func:`baseline_save_steps` steps), the one
    whose clean perplexity on the held-out blocks is closest to the regularized model's, if within 5 %
    (:data:`MATCH_TOLERANCE`); it is measured with the same weight-noise and substitution
    settings and seed. This keeps the architecture, the data and the seed, and compares damage at equal clean
    performance (comparing at a matched perplexity needs no model of the regularizer's family to be retrained; a
    regression of damage on perplexity across families would extrapolate from 3 seeds). Without a match the claim is
    "not measured" and the entry reports the uncontrolled comparison beside it.

    Returns:
        ``{name: measures}`` for each matched baseline found (with ``matched_to``, ``matched_checkpoint`` and
        ``matched_log_perplexity_ratio``).
    """
    from ..analysis.report import analyze_model
    from ..evaluation import TokenBatch, evaluate_perplexity

    eval_text = TokenBatch(text.input_ids[: args.eval_blocks], None)
    candidates: dict[str, float] = {"final": measures["baseline"]["perplexity"]}
    checkpoints = sorted(
        (d for d in os.listdir(baseline_dir) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[-1])
    ) if os.path.isdir(baseline_dir) else []  # fmt: skip
    found: dict[str, dict] = {}
    for name, family in MATCHED_BASELINES.items():
        target = measures.get(family, {}).get("perplexity")
        if not is_finite(target):
            continue
        for checkpoint in checkpoints:
            if checkpoint not in candidates:
                model = AutoModelForCausalLM.from_pretrained(os.path.join(baseline_dir, checkpoint))
                if args.device:
                    model.to(args.device)
                candidates[checkpoint] = evaluate_perplexity(model, eval_text, progress=False)
                del model
        best = min(candidates, key=lambda c: abs(math.log(candidates[c] / target)))
        gap = math.log(candidates[best] / target)
        if abs(gap) > MATCH_TOLERANCE:
            logger.info("seed %d: no baseline checkpoint within 5 %% of %s's perplexity %.1f", seed, family, target)
            continue
        match = {"matched_to": family, "matched_checkpoint": best, "matched_log_perplexity_ratio": gap}
        if best == "final":
            found[name] = {k: measures["baseline"].get(k) for k in ("perplexity", *_ROBUSTNESS)} | match
            continue
        model = AutoModelForCausalLM.from_pretrained(os.path.join(baseline_dir, best), dtype=torch.float32)
        if args.device:
            model.to(args.device)
        tokenizer = AutoTokenizer.from_pretrained(baseline_dir)
        settings = _analysis_settings(args, seed, False)
        settings.sweeps, settings.morans_permutations = ["noise", "substitution"], 0
        set_seed(seed)
        summary = analyze_model(model, tokenizer, text, settings, label=f"{name} (seed {seed})", progress=False)
        found[name] = {
            k: v
            for k, v in model_measures(summary.analysis_summary(), args).items()
            if k in ("perplexity", *_ROBUSTNESS)
        } | match
        del model
    return found


_ROBUSTNESS = ("noise_relative_delta", "substitution_relative_delta")


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


def baseline_save_steps(max_steps: int) -> int:
    """How often the baseline saves a checkpoint while it trains: 16 checkpoints over the run (every step of a run
    shorter than 16), the candidates of :func:`matched_baseline_measures`."""
    return max(1, max_steps // 16)


def _train(args: ClaimsArguments, name: str, seed: int, files: tuple[str, str], tokenizer: str | None) -> str:
    """Train the model ``name`` of :func:`_trained_models` for ``seed`` into ``seed<s>/<name>/`` (or, with
    ``reuse_trained``, reuse the finished run there); its folder. The baseline saves its weights every
    :func:`baseline_save_steps` steps (``checkpoint-<step>/``, model only) for the perplexity-matched baselines."""
    family, tau = _trained_models(args)[name]
    recipe = dict(
        train_file=files[0], validation_file=files[1], output_dir=os.path.join(args.output_dir, f"seed{seed}", name),
        tau=tau, max_steps=args.max_steps, batch_size=args.train_batch_size, learning_rate=args.learning_rate,
        block_size=args.block_size, seed=seed, model_preset=args.model_preset, vocab_size=args.vocab_size,
        max_eval_blocks=args.eval_blocks, tokenizer=tokenizer, disable_tqdm=not args.progress,
    )  # fmt: skip
    if args.config_overrides:
        recipe["config_overrides"] = args.config_overrides
    if name == "baseline":  # its checkpoints are the perplexity-matched baselines (matched_baseline_measures)
        recipe.update(save_strategy="steps", save_steps=baseline_save_steps(args.max_steps), save_only_model=True)
    if FAMILIES[family].topolm_sites:
        recipe.update(topo_radius=topolm_radius(args), topo_neighbourhoods_per_batch=args.topolm_neighbourhoods)
    if args.device == "cpu":
        recipe["use_cpu"] = True
    return train_family(family, reuse=args.reuse_trained, **recipe)["output_dir"]


def topolm_radius(args: ClaimsArguments) -> int:
    """TopoLM's neighbourhood radius for the recipe: ``args.topolm_radius`` (TopoLM's 5), clipped to the largest that
    fits the recipe's sheet of the hidden size (TopoLM's sites are the residual stream, one unit per hidden
    dimension): 4 for the default 4 × 128 recipe's 8 × 16 sheet, 5 for a 256-wide model's 16 × 16 sheet. A clipped
    radius is logged; the run's JSON records it as ``topolm_radius_used``.

    Raises:
        InputError: when the hidden size is too small for any TopoLM neighbourhood (a sheet under 3 × 3).
    """
    from ..models import apply_overrides, preset_config
    from ..sheet import most_square_shape

    config = apply_overrides(preset_config(args.model_preset, args.vocab_size, args.block_size), args.config_overrides)
    height, width = most_square_shape(config.hidden_size)
    largest = (min(height, width) + 1) // 2
    if largest < 2:
        raise InputError(
            f"The recipe's hidden size {config.hidden_size} makes a {height} x {width} sheet, too small for TopoLM's "
            f"neighbourhoods (3 x 3 at least): widen the model ({parameter('config_overrides')}) or leave 'topolm' "
            f"out of {parameter('families')}."
        )
    if args.topolm_radius > largest:
        logger.warning(
            "TopoLM: radius %d needs a %d x %d window but the recipe's hidden-size sheet is %d x %d; using radius %d.",
            args.topolm_radius, 2 * args.topolm_radius - 1, 2 * args.topolm_radius - 1, height, width, largest,
        )  # fmt: skip
        return largest
    return args.topolm_radius


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
    (:func:`hf_topo.blimp.load_blimp`) is given, and the analysis' temporal windows with ``passages`` (the claims
    run measures Fig. 5B's window kinds per seed instead, :func:`measure_seed`). A post-hoc model's arrangement is
    saved to ``seed<s>/<name>_permutations.json``.

    Args:
        name: the model's name among the seed's (:func:`_planned`); a :data:`POST_HOC` name arranges the trained
            model of ``model_dir`` first.
        model_dir: the saved trained model (for a post-hoc model, the one it is made from).
        topography: the layers and sheets to analyse (default: the model's own).

    Returns:
        ``{measure: value}`` (:func:`model_measures`, plus ``blimp``, ``matched_pruning``, ``measure_wall_time_s``,
        ...).
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
        path = _arrangement_file(args, seed, name)  # the window kinds permute the baseline's fits by it
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report.permutations(), f)
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
    if name in NEIGHBOUR_MODELS:  # Truong & Hasson's neighbour-correlation structure
        measures |= neighbour_measures(model, text, args)
    if blimp is not None:
        from ..blimp import evaluate_blimp

        measures["blimp"] = evaluate_blimp(model, tokenizer, data=blimp, progress=False).overall
    del model
    measures["measure_wall_time_s"] = time.perf_counter() - start
    return measures


def measure_seed(
    args: ClaimsArguments, seed: int, files: tuple[str, str], done: dict | None = None, blimp=None
) -> dict[str, dict[str, Any]]:
    """Train every model of ``seed`` (the families and the τ sweep), make the post-hoc ones and measure each
    (:func:`measure_model`); ``{model: {measure: value}}``. ``done``: measures already taken for this seed and recipe
    (kept; those models are not measured again). The seed's ``measures.json`` is written after every model, so a
    stopped run resumes with the next one (``reuse_trained``)."""
    measures: dict[str, dict[str, Any]] = dict(done or {})
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
        start, cpu = time.perf_counter(), time.process_time()
        source = POST_HOC.get(name, "baseline" if name == BASELINE_AT_TOPOLM_SITES else name)
        topography = TopoConfig.from_pretrained(trained("topolm")) if name == BASELINE_AT_TOPOLM_SITES else None
        measures[name] = measure_model(args, name, seed, trained(source), files[1], topography=topography, blimp=blimp)
        # training (unless reused) and measuring: the wall time and the CPU time of all threads of this process
        measures[name] |= {"wall_time_s": time.perf_counter() - start, "cpu_time_s": time.process_time() - cpu}
        logger.info(
            "seed %d, %s: %s", seed, name, {k: v for k, v in measures[name].items() if not isinstance(v, dict)}
        )
        _save_measures(args, seed, measures)
    if "baseline" in measures and any(m not in measures for m, f in MATCHED_BASELINES.items() if f in measures):
        baseline_dir = trained("baseline")
        text = load_text_blocks(AutoTokenizer.from_pretrained(baseline_dir), args.block_size, text_file=files[1])
        measures |= matched_baseline_measures(args, seed, baseline_dir, text, measures)
        _save_measures(args, seed, measures)
    if "lora" in _missing_steps(args, measures):
        from .compare_lora import lora_rank_sweep, lora_sweep_measures

        result = lora_rank_sweep(
            trained("baseline"), trained("toponet"), lora_domains(args), ranks=args.lora_ranks,
            output_dir=os.path.join(args.output_dir, f"seed{seed}", "lora_sweep"), seed=seed,
            max_steps=args.lora_steps, max_train_tokens=args.lora_max_train_tokens, block_size=args.block_size,
            batch_size=args.train_batch_size, learning_rate=args.lora_learning_rate, device=args.device,
            progress=args.progress,
        )  # fmt: skip
        for name, values in lora_sweep_measures(result).items():
            measures[name] = measures[name] | values
        _save_measures(args, seed, measures)
    if "window_kinds" in _missing_steps(args, measures):
        from .window_kinds import MIN_MAX_DELTA, MIN_SEQUENCES, window_kind_measures, window_kinds_for_seed

        settings = args.window_settings()
        if settings["max_delta"] < MIN_MAX_DELTA or min(settings["max_sequences"], settings["yoking_sequences"]) < (
            MIN_SEQUENCES
        ):
            logger.warning("Window kinds below the reference's %d lags / %d sequences: %s", MIN_MAX_DELTA + 1,
                           MIN_SEQUENCES, settings)  # fmt: skip
        arrangement = None
        if os.path.isfile(_arrangement_file(args, seed, "arranged_baseline")):
            with open(_arrangement_file(args, seed, "arranged_baseline")) as f:
                arrangement = json.load(f)
        result = window_kinds_for_seed(
            trained("baseline"), trained("toponet"), files[1], seed=seed,
            output_dir=os.path.join(args.output_dir, f"seed{seed}", "window_kinds"), settings=settings,
            device=args.device, progress=args.progress, allow_below_reference=True, arrangement=arrangement,
        )  # fmt: skip
        for name, values in window_kind_measures(result).items():
            if name in measures:
                measures[name] = measures[name] | values
        _save_measures(args, seed, measures)
    return measures


def lora_domains(args: ClaimsArguments) -> dict[str, str]:
    """A.11's LoRA domains of the run: ``{"text": args.lora_train_file, "code": <output_dir>/data/code.txt}`` (each
    when asked for; the code corpus is written by :func:`run_claims`)."""
    domains = {"text": args.lora_train_file} if args.lora_train_file else {}
    if args.lora_code:
        domains["code"] = os.path.join(args.output_dir, "data", "code.txt")
    return domains


def _missing_steps(args: ClaimsArguments, measures: dict) -> list[str]:
    """The per-seed steps after the models' measures that ``measures`` still lacks: ``"lora"`` (A.11's sweep) and
    ``"window_kinds"`` (Fig. 5B), each only when asked for and with a baseline and a TopoNet measured."""
    if not {"baseline", "toponet"} <= set(measures):
        return []
    steps = []
    if lora_domains(args) and "lora_gain_mean" not in measures["toponet"]:
        steps.append("lora")
    if args.temporal_windows and "temporal_kind_morans_i" not in measures["toponet"]:
        steps.append("window_kinds")
    return steps


def _arrangement_file(args: ClaimsArguments, seed: int, name: str) -> str:
    return os.path.join(args.output_dir, f"seed{seed}", f"{name}_permutations.json")


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
    """The claims table as Markdown (one row per claim): both models' values, the paired difference on the claim's
    scale with its 95 % interval and Cohen's d_z, the raw and Holm-corrected two-sided p-values and the verdict."""
    lines = [
        "| claim | paper (where) | compared | scale | ours: a | ours: b | d: mean [95 % CI] | d_z | p | p (Holm) | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in result["claims"]:
        ours, effect = entry["ours"], entry.get("effect", {})
        a = ours.get(entry["compared"]["a"], {})
        b = ours.get(entry["compared"]["b"]) or {"mean": entry.get("threshold"), "sd": None}
        interval = f"[{_fmt(effect.get('ci_low'))}, {_fmt(effect.get('ci_high'))}]"
        lines.append(
            f"| {entry['claim']} | {entry['where']} | {entry['expected']} | {entry.get('scale', 'raw')} | "
            f"{_fmt(a.get('mean'))} ± {_fmt(a.get('sd'))} | {_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))} | "
            f"{_fmt(ours['mean'])} {interval} (n = {ours['n_seeds']}) | {_fmt(effect.get('cohens_dz'))} | "
            f"{_fmt(entry.get('p_value'))} | {_fmt(entry.get('p_holm'))} | **{entry['verdict']}** |"
        )
    counts = verdict_counts(result["claims"])
    family = next((e["family"] for e in result["claims"] if "family" in e), {})
    lines.append("")
    lines.append(
        f"Family: {family.get('name', FAMILY)} ({family.get('size', '–')} tests, Holm, alpha = "
        f"{family.get('alpha', '–')}). Verdicts: " + ", ".join(f"{name} {n}" for name, n in counts.items() if n) + "."
    )
    return "\n".join(lines) + "\n"


def plot_claims(
    result: dict,
    path: str | os.PathLike,
    columns: int = 4,
    references: Sequence[str] = ("baseline",),
    panel_size: tuple[float, float] = (4.2, 3.2),
) -> str:
    """One panel per claim: the measure of both models per seed (dots; ``references`` in black, the others in red)
    and their mean (bar); a one-sample claim's threshold as a dashed line; the verdict and Holm's p in the title.
    The language and the vision tables (:mod:`~hf_topo.experiments.vision_claims`) are drawn by it."""
    from ..analysis.plots import pyplot, save_figure

    plt = pyplot()
    entries = result["claims"]
    rows = math.ceil(len(entries) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows), squeeze=False)
    for ax, entry in zip(axes.flat, entries, strict=False):
        names = [name for name in (entry["compared"]["a"], entry["compared"]["b"]) if name in entry["ours"]]
        for i, name in enumerate(names):
            values = entry["ours"][name]["values"]
            ax.bar(i, entry["ours"][name]["mean"] if values else 0, color="lightgray", width=0.6)
            ax.scatter([i] * len(values), values, color="black" if name in references else "tab:red", zorder=3)
        if entry.get("threshold") is not None:
            ax.axhline(entry["threshold"], color="tab:blue", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        p_holm = entry.get("p_holm")
        holm = f", Holm p {p_holm:.2g}" if is_finite(p_holm) else ""
        ax.set_title(f"{entry['id']}\n{entry['metric']}: {entry['verdict']}{holm}", fontsize=8)
        ax.axhline(0, color="gray", linewidth=0.5)
    for ax in list(axes.flat)[len(entries) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_results(result: dict, output_dir: str | os.PathLike, output: str | None = None) -> list[str]:
    """Write ``paper_claims.json``, ``paper_claims.md`` and ``paper_claims.png`` to ``output_dir`` (and the JSON to
    ``output``); the JSON paths."""
    os.makedirs(output_dir, exist_ok=True)
    targets = [os.path.join(output_dir, "paper_claims.json")] + ([output] if output else [])
    for target in targets:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    with open(os.path.join(output_dir, "paper_claims.md"), "w") as f:
        f.write(claims_markdown(result))
    plot_claims(result, os.path.join(output_dir, "paper_claims.png"))
    logger.info("Claims written to %s", ", ".join(targets))
    return targets


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
    radius = topolm_radius(args) if "topolm" in args.families else None  # a sheet too small fails before training
    blimp = None
    if args.blimp_dir:  # read before any model trains: a bad directory fails now
        from ..blimp import load_blimp

        blimp = load_blimp(args.blimp_dir, paradigms=args.blimp_paradigms, limit=args.blimp_limit)
    os.makedirs(args.output_dir, exist_ok=True)
    files = hold_out_lines(args.train_file, args.validation_fraction, os.path.join(args.output_dir, "data"))
    if args.lora_code:  # A.11's second domain, the same bytes on every run of one Python version
        from .compare_lora import write_code_corpus

        write_code_corpus(lora_domains(args)["code"])
    start = time.perf_counter()
    per_seed = []
    for seed in tqdm(args.seeds, desc="seeds", disable=not args.progress):
        cached = _cached_measures(args, seed) or {}
        measures = cached
        if any(name not in cached for name in _planned(args)) or _missing_steps(args, cached):
            measures = _save_measures(args, seed, measure_seed(args, seed, files, done=cached, blimp=blimp))
        per_seed.append({name: measures[name] for name in [*_planned(args), *MATCHED_BASELINES] if name in measures})
    import transformers

    result = {
        "command": command,
        "note": args.note,
        "recipe": args.recipe(),
        "topolm_radius_used": radius,
        "seeds": list(args.seeds),
        "verdict_rule": verdict_rule(args.alpha),
        "claims": evaluate_claims(CLAIMS, per_seed, args.alpha),
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
    result["verdict_counts"] = verdict_counts(result["claims"])
    result = json_safe(result)
    targets = write_results(result, args.output_dir, args.output)
    if result["tau_sweep"]:
        for directory in {os.path.abspath(os.path.dirname(target)) for target in targets}:
            plot_tau_sweep(result["tau_sweep"], directory)
    return result
