"""The vision rows of the claims table: the TopoNets paper's vision claims and Truong & Hasson's Weight / Activation
Similarity claims in their own convolutional setting, measured over several seeds on CPU (``hf-topo claims --domain
vision``).

    hf-topo claims --domain vision --seeds 0 1 2 3 4 --output benchmarks/results/paper_claims_vision.json

**Data.** scikit-learn's handwritten digits (1,797 8 × 8 images, 10 classes; the vision demo's split: every fifth
image of each class held out, 364 test images), shipped inside scikit-learn's wheel.

**Models per seed** (all from the seed: initialization, data order, augmentation; only the regularizer differs):

* ``baseline`` (τ = 0) and ``toponet`` (TopoLoss at ``topo_tau``): ``tiny-resnet`` (nine topographic convolutions,
  sheets 8 × 8 to 16 × 16) trained by the vision demo's recipe
  (:func:`~hf_topo.experiments.vision_demo.train_vision_model`) on the digits upscaled to ``image_size``;
* ``untrained``: the baseline's configuration initialized with the seed and never trained (the paper's "U" row);
* ``th_baseline``, ``th_ws``, ``th_as``: Truong & Hasson's CNN with its 11 × 11 ``fc1`` sheet, unregularized or with
  Weight / Activation Similarity (correlation distance) at ``th_lambda``, trained and measured by
  :mod:`hf_topo.experiments.truong_hasson` (:func:`~hf_topo.experiments.truong_hasson.train_model`,
  :func:`~hf_topo.experiments.truong_hasson.measure_model`: their three noise types at their levels, weight noise,
  Moran's I, neighbour correlations and Sarle's bimodality coefficient).

**Measures of the tiny-resnets** (on the held-out digits; a unit is a convolution's output channel, its response to
an image the channel's spatial mean, :func:`~hf_topo.analysis.image_activations.collect_image_activations`; each
measure is the mean over the nine topographic layers):

* ``accuracy``: held-out top-1;
* ``smoothness`` / ``robust_smoothness``: correlation of unit responses vs sheet distance (A.6,
  :func:`~hf_topo.analysis.smoothness.smoothness`, every pair); ``weight_smoothness`` the same on the weights;
* ``effective_dimensionality`` of the responses (§2.3, :func:`~hf_topo.analysis.dimensionality.effective_dimensionality`);
* ``morans_i``: Moran's I of each image's activation map on the sheet, averaged (Truong & Hasson's measure);
* ``selectivity_morans_i``: for every digit class, the t-map of eq. 2 (that class against the other nine) and its
  Moran's I (:func:`~hf_topo.analysis.category_maps.selectivity_from_responses`), averaged over classes and layers;
* ``pruning_delta_accuracy_<f>``: accuracy after L1 unstructured pruning of a fraction ``f`` of every topographic
  weight tensor minus clean accuracy (Fig. 4A); the claim reads ``f = 0.75`` (``pruning_delta_accuracy_claim``),
  the share of these layers' weights that a φ = 2 downsampling removes (matched parameter counts, as Fig. 4A);
* ``downsampling_delta_accuracy``: accuracy after the paper's φ × φ downsampling of every topographic layer (A.5,
  :func:`hf_topo.downsampling.downsample_model`, no per-unit gains) minus clean accuracy (Fig. 4B).

**Verdicts.** The claims are :class:`~hf_topo.experiments.claims.Claim` data (:data:`VISION_CLAIMS`), judged by the
claims table's rule as one family of tests (:func:`judge_claims`, the one call of the rule: two-sided paired t-tests
over seeds, Holm's correction across the vision claims, effect sizes with 95 % intervals).

**Resume.** Models are saved under ``output_dir/seed<s>/<family>/``; each model's measures go to
``output_dir/seed<s>/measures.json`` as soon as they are taken. With ``reuse_trained``, a saved model is loaded
instead of trained and saved measures of the same recipe are kept, so a stopped run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analysis.neighbours import BIMODALITY_THRESHOLD
from ..errors import InputError, parameter
from .claims import Claim, evaluate_claims, plot_claims, verdict_counts, verdict_rule
from .statistics import is_finite

__all__ = [
    "NOISE_TYPES",
    "TH_FAMILIES",
    "VISION_CLAIMS",
    "VISION_FAMILIES",
    "VisionClaimsArguments",
    "judge_claims",
    "measure_vision_model",
    "run_vision_claims",
    "vision_claims_markdown",
]

logger = logging.getLogger(__name__)

#: Truong & Hasson's CNNs of one seed, by the family name of :mod:`hf_topo.experiments.truong_hasson`.
TH_FAMILIES = {"th_baseline": "baseline", "th_ws": "ws", "th_as": "as"}
#: The models of one seed: the tiny-resnets (baseline, TopoNet, untrained) and Truong & Hasson's CNNs.
VISION_FAMILIES = ("baseline", "toponet", "untrained", *TH_FAMILIES)
#: Truong & Hasson's input noise types (:data:`hf_topo.analysis.image_noise.NOISE_KINDS`).
NOISE_TYPES = ("gaussian", "pink", "salt_and_pepper")
#: Raised when a measure changes: saved measures of another version are taken again (the saved models are reused).
MEASURES_VERSION = 2
#: The files of a finished training run (a model folder with all of them is reused).
_SAVED_RUN_FILES = ("config.json", "metrics.json", "model.safetensors")


@dataclass
class VisionClaimsArguments:
    """The recipe of the vision claims: data, models, seeds, regularizer strengths and perturbations.

    Data and models:
        output_dir (`str`): models (`seed<s>/<family>/`), per-seed measures, `paper_claims_vision.{json,md,png}`.
        output (`str`, optional): also write the results JSON here.
        seeds (`list[int]`, defaults to `[0, 1, 2]`), families (defaults to all of :data:`VISION_FAMILIES`).
        model_preset (`str`, defaults to `"tiny-resnet"`), image_size (`int`, defaults to 16: the 8 × 8 digits
            upscaled 2×), max_steps, batch_size, learning_rate, topo_tau: the tiny-resnets' recipe (the vision
            demo's, with fewer steps).
        th_lambda, th_max_steps: Truong & Hasson's CNNs (λ of WS and AS; their other settings are
            :class:`~hf_topo.experiments.truong_hasson.TruongHassonArguments`' defaults: noise levels 0.01–0.2, three
            draws each, weight noise σ 0.05–0.5, five draws each).
    Perturbations of the tiny-resnets:
        pruning_fractions, pruning_claim_fraction, downsampling_factor.
    """

    output_dir: str = field(default="outputs/claims_vision", metadata={"help": "Models and results."})
    output: str | None = field(
        default=None, metadata={"help": "Also write the JSON here (e.g. benchmarks/results/paper_claims_vision.json)."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (≥ 3 for a verdict)."})
    families: list[str] = field(
        default_factory=lambda: list(VISION_FAMILIES),
        metadata={"help": f"Models per seed, among {', '.join(VISION_FAMILIES)}."},
    )
    model_preset: str = field(default="tiny-resnet", metadata={"help": "Vision architecture preset."})
    image_size: int = field(default=16, metadata={"help": "Model input side (the 8×8 digits are upscaled)."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps per tiny-resnet (~4.5 epochs)."})
    batch_size: int = field(default=64, metadata={"help": "Images per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine)."})
    topo_tau: float = field(default=5.0, metadata={"help": "TopoLoss strength of the TopoNet."})
    th_lambda: float = field(
        default=1.0, metadata={"help": "λ of Truong & Hasson's WS and AS CNNs (their range: 0.1–3)."}
    )
    th_max_steps: int = field(default=300, metadata={"help": "Optimizer steps per Truong & Hasson CNN."})
    pruning_fractions: list[float] = field(
        default_factory=lambda: [0.5, 0.75, 0.9], metadata={"help": "L1 pruning fractions of the sweep."}
    )
    pruning_claim_fraction: float = field(
        default=0.75, metadata={"help": "The pruning fraction the claim reads (0.75: what φ = 2 removes)."}
    )
    downsampling_factor: float = field(default=2.0, metadata={"help": "φ of the φ × φ downsampling."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level of the verdicts (Holm-corrected)."})
    note: str | None = field(default=None, metadata={"help": "A note stored with the results."})
    reuse_trained: bool = field(
        default=False, metadata={"help": "Reuse the models and per-seed measures already saved in output_dir."}
    )
    progress: bool = field(default=True, metadata={"help": "Progress bars."})

    def __post_init__(self):
        unknown = sorted(set(self.families) - set(VISION_FAMILIES))
        if unknown or "baseline" not in self.families:
            raise InputError(
                f"{parameter('families', self.families)}: every family must be one of {list(VISION_FAMILIES)} and "
                "'baseline' is required (the untrained model takes its configuration)."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"{parameter('seeds', self.seeds)}: give distinct seeds, at least 3 for a verdict.")
        for name in ("image_size", "max_steps", "batch_size", "th_max_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{parameter(name, getattr(self, name))} must be at least 1.")
        if (
            not all(0 < f < 1 for f in self.pruning_fractions)
            or self.pruning_claim_fraction not in self.pruning_fractions
        ):
            raise InputError(
                f"{parameter('pruning_fractions', self.pruning_fractions)} must lie in (0, 1) and include "
                f"{parameter('pruning_claim_fraction', self.pruning_claim_fraction)}."
            )
        if not self.downsampling_factor > 1:
            raise InputError(f"{parameter('downsampling_factor', self.downsampling_factor)} must be > 1 (e.g. 2).")
        if not self.th_lambda > 0:
            raise InputError(f"{parameter('th_lambda', self.th_lambda)} must be > 0 (their range: 0.1–3).")
        if not 0 < self.alpha < 1:
            raise InputError(f"{parameter('alpha', self.alpha)} must be between 0 and 1 (e.g. 0.05).")

    def recipe(self) -> dict[str, Any]:
        """The settings that define the measurement (no paths), for the results JSON."""
        skip = {"output_dir", "output", "reuse_trained", "progress", "note"}
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in skip}

    def measure_recipe(self) -> dict[str, Any]:
        """What one seed's measures depend on (not the seeds, the families, alpha)."""
        kept = {k: v for k, v in self.recipe().items() if k not in ("seeds", "families", "alpha")}
        return kept | {"measures_version": MEASURES_VERSION}


# ---- the claims ------------------------------------------------------------------------------------------------

_TOPONETS = "Deb, Deb & Murty, TopoNets (ICLR 2025)"
_TH = "Truong & Hasson, Beyond topography (Weight / Activation Similarity)"
_OURS = "hf_topo (not a paper claim)"
_TH_DESIGN = (
    "paired over seeds: Truong & Hasson's CNN (11 × 11 fc1 sheet) on the digits, the regularized model against the "
    "unregularized one of the same seed (same initialization and data order); noise drawn identically for both"
)
_ACCURACY_COST = (
    "5 % of accuracy, on the log scale (log 1/0.95): TopoNets reports a 3 % relative drop for its ResNet-18 "
    "(§3.1 / A.3), which it calls small, and 6 % for TDANN, which it presents as the cost to beat"
)
_NOT_SMOOTH = (
    "0.1 in Moran's I over the baseline's (the paper gives no number; Moran's I is ≈ 0 for spatially random maps "
    "and ≈ 1 for smooth ones, so 0.1 is a tenth of the way to smooth), as the language table"
)


def _noise_claims(family: str, display: str) -> list[Claim]:
    names = {"gaussian": "Gaussian", "pink": "pink (1/f)", "salt_and_pepper": "salt-and-pepper"}
    return [
        Claim(f"{family}_{noise}_robustness", f"{display} makes a CNN more robust to {names[noise]} input noise.",
              _TH, "input robustness: accuracy − clean accuracy, levels 0.01–0.2", "smaller accuracy drop than the "
              "unregularized CNN", f"{noise}_delta_accuracy", family, "th_baseline", +1, design=_TH_DESIGN)
        for noise in NOISE_TYPES
    ]  # fmt: skip


#: Every vision claim, one family of tests (Holm-corrected together). "Δ accuracy" = perturbed minus clean accuracy
#: of the same model (≤ 0; larger is more resilient).
VISION_CLAIMS: tuple[Claim, ...] = (
    Claim("vision_smoothness", "TopoNet-ResNets are topographic: response correlation falls off with sheet distance "
          "more than in the baseline.", _TOPONETS, "§3.1, A.6 (ResNet-18 / ResNet-50)",
          "TopoNets' smoothness above the baseline's", "smoothness", "toponet", "baseline", +1),
    Claim("vision_accuracy_cost", "TopoLoss induces topography without a large loss of accuracy.", _TOPONETS,
          "§3.1, A.3", "small ImageNet top-1 cost (ResNet-18: 3 % relative)", "accuracy", "toponet", "baseline", +1,
          "log", margin=-math.log(0.95), margin_reason=_ACCURACY_COST),
    Claim("vision_effective_dimensionality", "Topography lowers the effective dimensionality of the features.",
          _TOPONETS, "§3.2, Fig. 3A–B", "lower dimensionality for TopoNets (a ratio: log scale)",
          "effective_dimensionality", "toponet", "baseline", -1, "log"),
    Claim("vision_morans_i", "TopoNet activation maps are spatially autocorrelated on the sheet.", _OURS,
          "Moran's I (Truong & Hasson's measure) on the TopoNet's sheets", "higher than the baseline",
          "morans_i", "toponet", "baseline", +1),
    Claim("vision_pruning", "TopoNets are more resilient to L1 unstructured pruning.", _TOPONETS, "§3.3, Fig. 4A",
          "smaller accuracy drop than the baseline at matched parameter counts", "pruning_delta_accuracy_claim",
          "toponet", "baseline", +1),
    Claim("vision_downsampling", "TopoNets are more resilient to downsampling of their topographic layers.",
          _TOPONETS, "§3.3, Fig. 4B, A.5", "accuracy kept when downsampled", "downsampling_delta_accuracy",
          "toponet", "baseline", +1),
    Claim("vision_selectivity_vs_baseline", "Category-selectivity maps of TopoNets are spatially clustered, more "
          "than the baseline's.", _TOPONETS, "§3.4, Fig. 5A (eq. 2 t-maps; here: the ten digit classes)",
          "clustered category maps in TopoNets, not in the baseline", "selectivity_morans_i", "toponet",
          "baseline", +1),
    Claim("vision_selectivity_vs_untrained", "The same against an untrained model of the same configuration.",
          _TOPONETS, "§3.4, Fig. 5A (U/B/T rows)", "clustered maps in the trained TopoNet, not in an untrained one",
          "selectivity_morans_i", "toponet", "untrained", +1,
          design="paired over seeds: the trained TopoNet against the untrained model initialized with the same seed"),
    *_noise_claims("th_ws", "Weight Similarity"),
    *_noise_claims("th_as", "Activation Similarity"),
    Claim("th_ws_weight_robustness", "Weight Similarity makes a CNN more robust to weight perturbation.", _TH,
          "weight robustness: accuracy − clean accuracy, σ · std(W) noise", "smaller accuracy drop",
          "weight_noise_delta_accuracy", "th_ws", "th_baseline", +1, design=_TH_DESIGN),
    Claim("th_as_weight_robustness", "Activation Similarity makes a CNN more robust to weight perturbation.", _TH,
          "weight robustness: accuracy − clean accuracy, σ · std(W) noise", "smaller accuracy drop",
          "weight_noise_delta_accuracy", "th_as", "th_baseline", +1, design=_TH_DESIGN),
    Claim("th_ws_smooth_maps", "Weight Similarity produces smooth topographies.", _TH,
          "findings (Moran's I of fc1 activation maps, their measure)", "WS smooth", "morans_i", "th_ws",
          "th_baseline", +1, design=_TH_DESIGN),
    Claim("th_ws_correlated_neighbours", "Weight Similarity gives correlated neighbourhoods.", _TH,
          "findings (neighbour correlations)", "WS: correlated neighbourhoods", "neighbour_correlation_mean", "th_ws",
          "th_baseline", +1, design=_TH_DESIGN),
    Claim("th_as_bimodal_neighbours", "Activation Similarity gives a bimodal neighbour-correlation structure.", _TH,
          "findings (neighbour correlations)", "AS: bimodal correlation structure", "neighbour_bimodality", "th_as",
          None, +1, threshold=BIMODALITY_THRESHOLD,
          design="one sample over seeds: Sarle's bimodality coefficient of the correlations of the 420 neighbour "
          "pairs (3 × 3) of fc1 over the test images, against 5/9 (a uniform distribution's)"),
    Claim("th_as_not_smooth", "Activation Similarity's structure lacks spatial smoothness.", _TH,
          "findings (Moran's I of fc1 activation maps, their measure)", "AS: no spatial smoothness", "morans_i",
          "th_as", "th_baseline", -1, margin=0.1, margin_reason=_NOT_SMOOTH, design=_TH_DESIGN),
)  # fmt: skip

#: The name of the vision table's family of tests.
VISION_FAMILY = "every measured claim of the vision table"


def judge_claims(claims: Sequence[Claim], per_seed: Sequence[dict], alpha: float) -> list[dict]:
    """Every claim's entry (measures over the seeds, test, effect, p-values, verdict), judged as one family: the one
    call of the claims table's verdict rule (:func:`hf_topo.experiments.claims.evaluate_claims`)."""
    return evaluate_claims(claims, per_seed, alpha, family=VISION_FAMILY)


# ---- data ------------------------------------------------------------------------------------------------------


def _load_images(folder: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(pixels (n, 3, S, S) in [0, 1], labels (n,), classes)`` of a class-folder tree, cropped as evaluation does."""
    import numpy as np
    from PIL import Image

    from ..vision.augmentation import EvalTransform, to_rgb
    from ..vision.data import check_image_folder

    summary = check_image_folder(folder, "validation_dir")
    crop = EvalTransform(image_size, [0.0] * 3, [1.0] * 3).crop
    pixels, labels = [], []
    for path in summary.files:
        with Image.open(path) as image:
            array = np.asarray(crop(to_rgb(image)), dtype=np.float32) / 255.0
        pixels.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
        labels.append(summary.classes.index(os.path.basename(os.path.dirname(path))))
    return torch.stack(pixels), torch.tensor(labels), summary.classes


@torch.no_grad()
def _accuracy(model, pixels: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int = 512) -> float:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    model.eval()
    correct = 0
    for start in range(0, pixels.shape[0], batch_size):
        batch = (pixels[start : start + batch_size] - mean_t) / std_t
        correct += int((model(pixel_values=batch).logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct / pixels.shape[0]


# ---- measuring one model ---------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if is_finite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def measure_vision_model(
    model, layers, pixels: torch.Tensor, labels: torch.Tensor, mean, std, args: VisionClaimsArguments
) -> dict[str, Any]:
    """Every measure of a tiny-resnet (see the module docstring); ``{measure: value}`` with ``per_layer`` values.

    Args:
        model: an image classifier; its weights are restored bit-exactly after each pruning.
        layers: its topographic layers (:func:`~hf_topo.analysis.topographic_layers`).
        pixels, labels: held-out images in [0, 1] and their classes; mean, std: the model's normalization.
    """
    from ..analysis.category_maps import selectivity_from_responses
    from ..analysis.dimensionality import effective_dimensionality
    from ..analysis.image_activations import collect_image_activations
    from ..analysis.perturbation import l1_prune_, prunable_weights, restored_weights
    from ..analysis.smoothness import smoothness, weight_smoothness
    from ..analysis.spatial import mean_morans_i

    model.eval()
    normalized = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    clean = _accuracy(model, pixels, labels, mean, std)
    measures: dict[str, Any] = {"accuracy": clean}
    responses = collect_image_activations(model, normalized, layers, batch_size=512, progress=False)
    # eq. 2's t-map of every digit class against the other nine, and its Moran's I (the category maps' measure)
    selectivity = selectivity_from_responses(
        responses, {layer.name: layer.sheet for layer in layers}, [str(label) for label in labels.tolist()]
    )
    per_layer: dict[str, dict[str, float]] = {}
    for layer in layers:
        samples = responses[layer.name]
        curve = smoothness(samples, layer.sheet, max_pairs=None)
        per_layer[layer.name] = {
            "smoothness": curve.score,
            "robust_smoothness": curve.robust_score,
            "weight_smoothness": weight_smoothness(layer).score,
            "effective_dimensionality": effective_dimensionality(samples),
            "morans_i": mean_morans_i(samples, layer.sheet),
            "selectivity_morans_i": _mean(list(selectivity.layers[layer.name].morans_i.values())),
        }
    for name in next(iter(per_layer.values())):
        measures[name] = _mean([values[name] for values in per_layer.values()])
    measures["per_layer"] = per_layer

    weights = prunable_weights(model, "topographic", layers)
    for fraction in args.pruning_fractions:
        with restored_weights(weights):
            l1_prune_(weights, fraction)
            measures[f"pruning_delta_accuracy_{fraction:g}"] = _accuracy(model, pixels, labels, mean, std) - clean
    measures["pruning_delta_accuracy_claim"] = measures[f"pruning_delta_accuracy_{args.pruning_claim_fraction:g}"]

    from ..downsampling import downsample_model

    factor = args.downsampling_factor
    smaller = downsample_model(model, factors=(factor, factor), target_modules=[layer.name for layer in layers],
                               gains=False)  # fmt: skip
    measures["downsampling_delta_accuracy"] = _accuracy(smaller, pixels, labels, mean, std) - clean
    measures["downsampling_parameters_kept"] = sum(p.numel() for p in smaller.parameters()) / sum(
        p.numel() for p in model.parameters()
    )
    del smaller

    return measures


def th_measures(record: dict) -> dict[str, Any]:
    """The claims' measures of one Truong & Hasson CNN from its record of
    :func:`~hf_topo.experiments.truong_hasson.measure_model` (kept whole under ``truong_hasson``, less its maps and
    per-pair values)."""
    neighbours = record["neighbour_correlation"]
    measures = {
        "accuracy": record["clean_accuracy"],
        **{f"{kind}_delta_accuracy": record["input_noise"][kind]["mean_delta_accuracy"] for kind in NOISE_TYPES},
        "weight_noise_delta_accuracy": record["weight_noise"]["mean_delta_accuracy"],
        "morans_i": record["morans_i"],
        "smoothness": record["activation_smoothness"],
        "weight_smoothness": record["weight_smoothness"],
        "neighbour_correlation_mean": neighbours["mean"],
        "neighbour_bimodality": neighbours["bimodality_coefficient"],
    }
    kept = {k: v for k, v in record.items() if k != "maps"}
    kept["neighbour_correlation"] = {k: v for k, v in neighbours.items() if k != "values"}
    return measures | {"truong_hasson": kept}


def _th_model(args: VisionClaimsArguments, seed: int, family: str, th_args, train):
    """Truong & Hasson's CNN of ``family`` for ``seed``: trained now, or (``reuse_trained``) the one saved."""
    from ..vision.truong_hasson_cnn import TruongHassonCNNForImageClassification
    from .truong_hasson import train_model

    directory = os.path.abspath(_model_dir(args, seed, family))
    if args.reuse_trained and all(
        os.path.isfile(os.path.join(directory, f)) for f in ("config.json", "model.safetensors")
    ):
        logger.info("Reusing the trained %s of seed %d in %s", family, seed, directory)
        return TruongHassonCNNForImageClassification.from_pretrained(directory).eval()
    logger.info("=== seed %d: training %s (λ = %g, %d steps) ===", seed, family, args.th_lambda, args.th_max_steps)
    model, _ = train_model(TH_FAMILIES[family], args.th_lambda, seed, train, th_args, directory)
    return model


# ---- training, resuming, the run -------------------------------------------------------------------------------


def _model_dir(args: VisionClaimsArguments, seed: int, family: str) -> str:
    return os.path.join(args.output_dir, f"seed{seed}", family)


def _trained(args: VisionClaimsArguments, seed: int, family: str, data: tuple[str, str]) -> str:
    """The folder of ``family``'s model for ``seed``: trained now, or (``reuse_trained``) the one saved there."""
    from .vision_demo import train_vision_model

    directory = os.path.abspath(_model_dir(args, seed, family))
    if args.reuse_trained and all(os.path.isfile(os.path.join(directory, f)) for f in _SAVED_RUN_FILES):
        logger.info("Reusing the trained %s of seed %d in %s", family, seed, directory)
        return directory
    if os.path.isdir(directory) and os.listdir(directory):
        if args.reuse_trained:  # a training that was stopped: start it again
            import shutil

            logger.warning("%s holds an unfinished run: training it again", directory)
            shutil.rmtree(directory)
        else:
            raise InputError(
                f"{directory} holds a model already; pass {parameter('reuse_trained')} to reuse it (and resume) or "
                f"another {parameter('output_dir')}."
            )
    tau = {"baseline": 0.0, "toponet": args.topo_tau}[family]
    logger.info("=== seed %d: training %s (τ = %g, %d steps) ===", seed, family, tau, args.max_steps)
    train_vision_model(
        directory, *data, tau=tau, max_steps=args.max_steps, batch_size=args.batch_size, image_size=args.image_size,
        learning_rate=args.learning_rate, seed=seed, model_preset=args.model_preset,
    )  # fmt: skip
    return directory


def _untrained(args: VisionClaimsArguments, seed: int, baseline_dir: str):
    """The baseline's configuration (topography record included), initialized with ``seed`` and never trained."""
    from transformers import AutoConfig, AutoModelForImageClassification, set_seed

    set_seed(seed)
    return AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(baseline_dir))


def _measures_file(args: VisionClaimsArguments, seed: int) -> str:
    return os.path.join(args.output_dir, f"seed{seed}", "measures.json")


def _saved_measures(args: VisionClaimsArguments, seed: int) -> dict:
    """With ``reuse_trained``, the measures of ``seed`` saved by a run of the same recipe (else ``{}``)."""
    path = _measures_file(args, seed)
    if not (args.reuse_trained and os.path.isfile(path)):
        return {}
    with open(path) as f:
        saved = json.load(f)
    if saved.get("recipe") != json.loads(json.dumps(args.measure_recipe())) or saved.get("seed") != seed:
        logger.warning("%s was measured with another recipe: measuring seed %d again", path, seed)
        return {}
    logger.info("Reusing the measures of %s for seed %d from %s", sorted(saved["measures"]), seed, path)
    return saved["measures"]


def _save_measures(args: VisionClaimsArguments, seed: int, measures: dict) -> None:
    from ..analysis.report import json_safe

    path = _measures_file(args, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"recipe": args.measure_recipe(), "seed": seed, "measures": json_safe(measures)}, f, indent=2)
    os.replace(path + ".tmp", path)


def measure_seed(args: VisionClaimsArguments, seed: int, data: tuple[str, str]) -> dict[str, dict]:
    """Train (or reuse) every family of ``seed`` and measure each model on the held-out images; ``{family:
    measures}``, saved after each model so that a stopped run resumes with ``reuse_trained``."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..analysis import topographic_layers
    from ..config import TopoConfig
    from .truong_hasson import TruongHassonArguments, digits_tensors, measure_model

    measures = _saved_measures(args, seed)
    planned = [f for f in VISION_FAMILIES if f in args.families and f not in measures]
    resnets = [f for f in planned if f not in TH_FAMILIES]
    if resnets:
        baseline_dir = _trained(args, seed, "baseline", data)
        processor = AutoImageProcessor.from_pretrained(baseline_dir)
        mean, std = list(processor.image_mean), list(processor.image_std)
        pixels, labels, _ = _load_images(data[1], args.image_size)
        reference = TopoConfig.from_pretrained(baseline_dir)  # every model is measured on the baseline's sheets
    if any(f in TH_FAMILIES for f in planned):
        digits = digits_tensors()
        th_args = TruongHassonArguments(
            output_dir=args.output_dir, seeds=[seed], max_steps=args.th_max_steps, lambdas=[args.th_lambda]
        )
    for family in planned:
        start = time.perf_counter()
        if family in TH_FAMILIES:
            model = _th_model(args, seed, family, th_args, digits["train"])
            measures[family] = th_measures(measure_model(model, digits["test"], th_args))
        else:
            if family == "untrained":
                model = _untrained(args, seed, baseline_dir)
            else:
                directory = baseline_dir if family == "baseline" else _trained(args, seed, family, data)
                model = AutoModelForImageClassification.from_pretrained(directory, dtype=torch.float32)
            layers = topographic_layers(model, reference)
            measures[family] = measure_vision_model(model, layers, pixels, labels, mean, std, args)
        measures[family]["wall_time_s"] = time.perf_counter() - start
        _save_measures(args, seed, measures)
        logger.info("seed %d, %s: accuracy %.4f", seed, family, measures[family]["accuracy"])
        del model
    return measures


# ---- the table and the figure ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if is_finite(value) else "–"


def vision_claims_markdown(result: dict) -> str:
    """The vision claims as a Markdown table (one row per claim): both models' means ± sd over the seeds (or the
    threshold of a one-sample claim), the mean difference with its 95 % interval, the Holm-corrected p-value and the
    verdict."""
    lines = [
        "| claim | paper (where) | compared | ours: a | ours: b | d (mean, 95 % CI) | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in result["claims"]:
        ours, effect = entry["ours"], entry.get("effect", {})
        a = ours.get(entry["compared"]["a"], {})
        b = ours.get(entry["compared"]["b"])
        b_text = f"{_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))}" if b else f"threshold {_fmt(entry.get('threshold'))}"
        lines.append(
            f"| {entry['claim']} | {entry['where']} | {entry['expected']} | "
            f"{_fmt(a.get('mean'))} ± {_fmt(a.get('sd'))} | {b_text} | "
            f"{_fmt(effect.get('mean_difference'))} [{_fmt(effect.get('ci_low'))}, {_fmt(effect.get('ci_high'))}] "
            f"(n = {ours['n_seeds']}) | {_fmt(entry.get('p_holm'))} | **{entry['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def plot_vision_claims(result: dict, path: str | os.PathLike) -> str:
    """One panel per claim (:func:`~hf_topo.experiments.claims.plot_claims`): both models' measure per seed (dots)
    and its mean (bar), or the threshold line of a one-sample claim; the verdict in the title."""
    return plot_claims(
        result, path, columns=5, references=("baseline", "th_baseline", "untrained"), panel_size=(3.6, 3.0)
    )


def run_vision_claims(args: VisionClaimsArguments, command: str | None = None) -> dict:
    """Train, measure and judge every claim of :data:`VISION_CLAIMS` over ``args.seeds``; writes
    ``paper_claims_vision.json``, ``.md`` and ``.png`` to ``args.output_dir`` (and the JSON to ``args.output``);
    returns the results."""
    import transformers

    from .._version import __version__
    from ..analysis.report import json_safe
    from .vision_demo import write_digits_folders

    start = time.perf_counter()
    os.makedirs(args.output_dir, exist_ok=True)
    data_dir = os.path.join(args.output_dir, "data")
    if os.path.isdir(os.path.join(data_dir, "validation")):
        data = (os.path.join(data_dir, "train"), os.path.join(data_dir, "validation"))
    else:
        data = write_digits_folders(data_dir)
    per_seed = []
    from tqdm.auto import tqdm

    for seed in tqdm(args.seeds, desc="seeds", disable=not args.progress):
        measures = measure_seed(args, seed, data)
        per_seed.append({family: measures[family] for family in VISION_FAMILIES if family in measures})
    result = {
        "command": command,
        "note": args.note,
        "data": "sklearn.datasets.load_digits (1,797 8x8 digits, 10 classes; every 5th image per class held out)",
        "recipe": args.recipe(),
        "seeds": list(args.seeds),
        "verdict_rule": verdict_rule(args.alpha)
        | {"family": f"{VISION_FAMILY}: Holm's step-down correction of the two-sided p-values across it"},
        "claims": judge_claims(VISION_CLAIMS, per_seed, args.alpha),
        "per_seed": {str(seed): measures for seed, measures in zip(args.seeds, per_seed, strict=True)},
        "machine": {"cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "versions": {"hf_topo": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - start,
    }
    result["verdict_counts"] = verdict_counts(result["claims"])
    result = json_safe(result)
    targets = [os.path.join(args.output_dir, "paper_claims_vision.json")] + ([args.output] if args.output else [])
    for target in targets:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    with open(os.path.join(args.output_dir, "paper_claims_vision.md"), "w") as f:
        f.write(vision_claims_markdown(result))
    plot_vision_claims(result, os.path.join(args.output_dir, "paper_claims_vision.png"))
    logger.info("Vision claims written to %s", ", ".join(targets))
    return result
