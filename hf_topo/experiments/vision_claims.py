"""The vision rows of the claims table: the TopoNets paper's vision claims and Truong & Hasson's Weight / Activation
Similarity claims, measured over several seeds on a CPU recipe (``hf-topo claims --domain vision``).

**Recipe.** scikit-learn's handwritten digits (:func:`~hf_topo.experiments.vision_demo.write_digits_folders`: 1,797
8 × 8 images, every fifth of each class held out), upscaled to ``image_size``; ``tiny-resnet`` (nine topographic
convolutions, sheets 8 × 8 to 16 × 16) trained by the vision demo's recipe
(:func:`~hf_topo.experiments.vision_demo.train_vision_model`). For every seed, one model per family, all from the
same seed (initialization, data order, augmentation), so only the regularizer differs:

* ``baseline``: τ = 0; ``toponet``: TopoLoss at ``topo_tau``;
* ``untrained``: the baseline's configuration, initialized with the seed and never trained (the paper's "U" row);
* ``ws`` / ``as``: Truong & Hasson's Weight / Activation Similarity (correlation distance, their choice) at
  ``ws_tau`` / ``as_tau``, on the same convolutions.

**Measures** (each model, on the held-out digits; a unit is a convolution's output channel, its response to an image
the channel's spatial mean, :func:`~hf_topo.analysis.image_activations.collect_image_activations`; a layer's measure
is averaged over the topographic layers):

* ``accuracy``: held-out top-1;
* ``smoothness`` / ``robust_smoothness``: correlation of unit responses vs sheet distance (A.6,
  :func:`~hf_topo.analysis.smoothness.smoothness`, every pair); ``weight_smoothness`` the same on the weights;
* ``effective_dimensionality`` of the responses (§2.3, :func:`~hf_topo.analysis.dimensionality.effective_dimensionality`);
* ``morans_i``: Moran's I of each image's activation map on the sheet, averaged (Truong & Hasson's measure);
* ``selectivity_morans_i``: for every digit class, the t-map of eq. 2 (that class against the other nine,
  :func:`~hf_topo.analysis.selectivity.selectivity_t`) and its Moran's I, averaged over classes and layers;
* ``pruning_delta_accuracy_<f>``: accuracy after L1 unstructured pruning of a fraction ``f`` of every topographic
  weight tensor minus clean accuracy (Fig. 4A); the claim reads ``f = 0.75``, the weights a φ = 2 downsampling
  removes from these layers;
* ``downsampling_delta_accuracy``: accuracy after the paper's φ × φ downsampling of every topographic layer (A.5,
  :func:`hf_topo.downsampling.downsample_model`, no per-unit gains) minus clean accuracy (Fig. 4B);
* ``<noise>_delta_accuracy`` for Gaussian, pink (1/f) and salt-and-pepper input noise: accuracy on noisy images minus
  clean accuracy, averaged over ``noise_levels`` (Truong & Hasson's three noise types, levels 0.01–0.2, pixels in
  [0, 1]; per-level values are kept too);
* ``weight_noise_delta_accuracy``: Gaussian noise of ``σ · std(W)`` on every topographic weight tensor, accuracy
  minus clean accuracy averaged over ``weight_noise_sigmas`` and ``weight_noise_repeats`` draws.

**Verdicts.** The claims are :class:`~hf_topo.experiments.claims.Claim` data (:data:`VISION_CLAIMS`) judged by the
claims table's rule (:func:`judge_claims`, the one place that calls :mod:`hf_topo.experiments.statistics`).

**Resume.** Models are saved under ``output_dir/seed<s>/<family>/``; each model's measures are written to
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

from ..errors import InputError, parameter
from .claims import Claim, evaluate_claim
from .statistics import is_finite

__all__ = [
    "NOISE_TYPES",
    "VISION_CLAIMS",
    "VISION_FAMILIES",
    "VisionClaimsArguments",
    "add_input_noise",
    "judge_claims",
    "measure_vision_model",
    "run_vision_claims",
    "vision_claims_markdown",
]

logger = logging.getLogger(__name__)

#: The models of one seed: trained (baseline, TopoNet, WS, AS) and the untrained one.
VISION_FAMILIES = ("baseline", "toponet", "untrained", "ws", "as")
#: Truong & Hasson's input noise types.
NOISE_TYPES = ("gaussian", "pink", "salt_and_pepper")
#: The regularizer settings of each trained family (fields of :class:`~hf_topo.trainer.TopoTrainingArguments`).
_FAMILY_SETTINGS = {
    "baseline": {},
    "toponet": {},
    "ws": {"topo_loss_type": "weight_similarity", "topo_distance": "correlation"},
    "as": {"topo_loss_type": "activation_similarity", "topo_distance": "correlation"},
}
#: Raised when :func:`measure_vision_model` changes: saved measures of another version are taken again (the saved
#: models are still reused).
MEASURES_VERSION = 1
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
            upscaled 2×), max_steps, batch_size, learning_rate: the vision demo's recipe.
        topo_tau, ws_tau, as_tau: strengths of TopoLoss and Weight / Activation Similarity.
    Perturbations:
        pruning_fractions, pruning_claim_fraction, downsampling_factor, noise_levels, weight_noise_sigmas,
        weight_noise_repeats.
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
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps per trained model (~4.5 epochs)."})
    batch_size: int = field(default=64, metadata={"help": "Images per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine)."})
    topo_tau: float = field(default=5.0, metadata={"help": "TopoLoss strength of the TopoNet."})
    ws_tau: float = field(default=1.0, metadata={"help": "Weight Similarity strength."})
    as_tau: float = field(default=1.0, metadata={"help": "Activation Similarity strength."})
    pruning_fractions: list[float] = field(
        default_factory=lambda: [0.5, 0.75, 0.9], metadata={"help": "L1 pruning fractions of the sweep."}
    )
    pruning_claim_fraction: float = field(
        default=0.75, metadata={"help": "The pruning fraction the claim reads (0.75: what φ = 2 removes)."}
    )
    downsampling_factor: float = field(default=2.0, metadata={"help": "φ of the φ × φ downsampling."})
    noise_levels: list[float] = field(
        default_factory=lambda: [0.01, 0.05, 0.1, 0.2],
        metadata={"help": "Input noise levels (Gaussian σ, pink σ, salt-and-pepper fraction; pixels in [0, 1])."},
    )
    weight_noise_sigmas: list[float] = field(
        default_factory=lambda: [0.25, 0.5], metadata={"help": "Weight noise σ (× each tensor's std)."}
    )
    weight_noise_repeats: int = field(default=2, metadata={"help": "Noise draws per weight-noise σ."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level of the verdicts."})
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
                "'baseline' is required (every claim compares against it or its configuration)."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"{parameter('seeds', self.seeds)}: give distinct seeds, at least 3 for a verdict.")
        for name in ("image_size", "max_steps", "batch_size", "weight_noise_repeats"):
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
        if not self.noise_levels or not all(0 < level <= 1 for level in self.noise_levels):
            raise InputError(f"{parameter('noise_levels', self.noise_levels)}: give levels in (0, 1], e.g. 0.01 0.1.")
        if not self.weight_noise_sigmas or not all(s > 0 for s in self.weight_noise_sigmas):
            raise InputError(f"{parameter('weight_noise_sigmas', self.weight_noise_sigmas)} must be > 0.")
        if not self.downsampling_factor > 1:
            raise InputError(f"{parameter('downsampling_factor', self.downsampling_factor)} must be > 1 (e.g. 2).")
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
_TH = "Truong & Hasson (Weight / Activation Similarity)"
_OURS = "hf_topo (not a paper claim)"
#: The margin of "not smooth": AS's mean Moran's I may exceed the baseline's by at most this (the spread of the
#: baseline's own Moran's I across seeds and layers is of this order; T&H report AS maps without spatial structure).
AS_NOT_SMOOTH_MARGIN = 0.1
#: The accuracy a TopoNet may lose against its baseline and still count as "no large cost" (2 points; the paper's
#: TopoNet-ResNet-18 loses a few points of ImageNet top-1 at its strongest τ).
ACCURACY_MARGIN = 0.02


def _noise_claims(family: str, display: str) -> list[Claim]:
    names = {"gaussian": "Gaussian", "pink": "pink (1/f)", "salt_and_pepper": "salt-and-pepper"}
    return [
        Claim(f"{family}_{noise}_robustness", f"{display} makes a CNN more robust to {names[noise]} input noise.",
              _TH, "input robustness, Gaussian / pink / salt-and-pepper at 0.01–0.2",
              "smaller accuracy drop than without the regularizer", f"{noise}_delta_accuracy", family, "baseline", +1)
        for noise in NOISE_TYPES
    ]  # fmt: skip


#: Every vision claim. "delta accuracy" = perturbed minus clean accuracy of the same model (≤ 0; larger is more
#: resilient).
VISION_CLAIMS: tuple[Claim, ...] = (
    Claim("vision_smoothness", "TopoNet-ResNets are topographic: response correlation falls off with sheet distance "
          "more than in the baseline.", _TOPONETS, "§3.1, A.6 (ResNet-18 / ResNet-50)",
          "TopoNets' smoothness above the baseline's", "smoothness", "toponet", "baseline", +1),
    Claim("vision_accuracy_cost", "TopoLoss induces topography without a large loss of accuracy.", _TOPONETS,
          "§3.1, Fig. 2A", "small ImageNet top-1 cost", "accuracy", "toponet", "baseline", +1,
          margin=ACCURACY_MARGIN),
    Claim("vision_effective_dimensionality", "Topography lowers the effective dimensionality of the features.",
          _TOPONETS, "§3.2, Fig. 3A–B", "lower dimensionality for TopoNets", "effective_dimensionality",
          "toponet", "baseline", -1),
    Claim("vision_morans_i", "TopoNet activation maps are spatially autocorrelated.", _OURS,
          "Moran's I (Truong & Hasson's measure) on the TopoNet's sheets", "higher than the baseline",
          "morans_i", "toponet", "baseline", +1),
    Claim("vision_pruning", "TopoNets are more resilient to L1 unstructured pruning.", _TOPONETS, "§3.3, Fig. 4A",
          "smaller accuracy drop than the baseline", "pruning_delta_accuracy_claim", "toponet", "baseline", +1),
    Claim("vision_downsampling", "TopoNets are more resilient to downsampling of their topographic layers.",
          _TOPONETS, "§3.3, Fig. 4B, A.5", "accuracy kept when downsampled", "downsampling_delta_accuracy",
          "toponet", "baseline", +1),
    Claim("vision_selectivity_vs_baseline", "Category-selectivity maps of TopoNets are spatially clustered "
          "(patches), more than the baseline's.", _TOPONETS, "§3.4, Fig. 5A (eq. 2 t-maps; here: digit classes)",
          "clustered category maps in TopoNets, not in the baseline", "selectivity_morans_i", "toponet",
          "baseline", +1),
    Claim("vision_selectivity_vs_untrained", "The same against an untrained model of the same configuration.",
          _TOPONETS, "§3.4, Fig. 5A (U/B/T rows)", "clustered maps only in the trained TopoNet",
          "selectivity_morans_i", "toponet", "untrained", +1),
    *_noise_claims("ws", "Weight Similarity"),
    *_noise_claims("as", "Activation Similarity"),
    Claim("ws_weight_robustness", "Weight Similarity makes a CNN more robust to weight perturbation.", _TH,
          "weight robustness", "smaller accuracy drop", "weight_noise_delta_accuracy", "ws", "baseline", +1),
    Claim("as_weight_robustness", "Activation Similarity makes a CNN more robust to weight perturbation.", _TH,
          "weight robustness", "smaller accuracy drop", "weight_noise_delta_accuracy", "as", "baseline", +1),
    Claim("ws_smooth_maps", "Weight Similarity gives spatially smooth activation maps.", _TH,
          "WS maps (Moran's I)", "high Moran's I", "morans_i", "ws", "baseline", +1),
    Claim("as_bimodal", "Activation Similarity gives a bimodal distribution of neighbour correlations.", _TH,
          "AS neighbour correlations", "bimodal", "neighbour_bimodality", "as", "baseline", +1),
    Claim("as_not_smooth", "Activation Similarity's maps are not spatially smooth.", _TH, "AS maps (Moran's I)",
          "no spatial smoothness", "morans_i", "as", "baseline", -1, margin=AS_NOT_SMOOTH_MARGIN),
)  # fmt: skip


def judge_claims(claims: Sequence[Claim], per_seed: Sequence[dict], alpha: float) -> list[dict]:
    """Every claim's entry in the table (measures over the seeds, test, verdict): the one call of the verdict rule."""
    return [evaluate_claim(claim, per_seed, alpha) for claim in claims]


# ---- data and perturbations ------------------------------------------------------------------------------------


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


def _pink_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Noise of unit standard deviation per image whose power falls as 1/f over spatial frequency f."""
    height, width = shape[-2:]
    white = torch.randn(shape, generator=generator)
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    frequency = torch.sqrt(fy**2 + fx**2)
    frequency[0, 0] = 1.0  # the mean: left as drawn, then removed below
    spectrum = torch.fft.rfft2(white) / frequency.sqrt()  # amplitude ∝ f^(-1/2): power ∝ 1/f
    noise = torch.fft.irfft2(spectrum, s=(height, width))
    noise = noise - noise.mean(dim=(-2, -1), keepdim=True)
    return noise / noise.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def add_input_noise(pixels: torch.Tensor, kind: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """``pixels`` (``(n, c, h, w)`` in [0, 1]) with Truong & Hasson's input noise, clipped to [0, 1].

    ``"gaussian"``: ``+ level · N(0, 1)`` per pixel; ``"pink"``: ``+ level ·`` 1/f noise of unit standard deviation
    per image; ``"salt_and_pepper"``: a fraction ``level`` of the pixels set to 0 or 1 (equally likely). The same noise
    goes to every channel of a pixel (a grey image stays grey).
    """
    if kind not in NOISE_TYPES:
        raise ValueError(f"Unknown noise {kind!r}; choose one of {NOISE_TYPES}.")
    if not 0 <= level <= 1:
        raise ValueError(f"Noise level {level} must lie in [0, 1].")
    n, _, height, width = pixels.shape
    if kind == "gaussian":
        noisy = pixels + level * torch.randn((n, 1, height, width), generator=generator)
    elif kind == "pink":
        noisy = pixels + level * _pink_noise((n, 1, height, width), generator)
    else:
        draw = torch.rand((n, 1, height, width), generator=generator)
        salt = torch.rand((n, 1, height, width), generator=generator) < 0.5
        noisy = torch.where(draw < level, salt.to(pixels.dtype).expand_as(pixels), pixels)
    return noisy.clamp(0.0, 1.0)


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
    model, layers, pixels: torch.Tensor, labels: torch.Tensor, mean, std, args: VisionClaimsArguments, seed: int
) -> dict[str, Any]:
    """Every measure of :data:`VISION_CLAIMS` for one model (see the module docstring); ``{measure: value}``.

    Args:
        model: an image classifier in eval mode; restored bit-exactly after each weight perturbation.
        layers: its topographic layers (:func:`~hf_topo.analysis.topographic_layers`).
        pixels, labels: held-out images in [0, 1] and their classes; mean, std: the model's normalization.
        seed: seeds the noise draws.
    """
    from ..analysis.dimensionality import effective_dimensionality
    from ..analysis.image_activations import collect_image_activations
    from ..analysis.maps import as_sheet_map
    from ..analysis.perturbation import add_weight_noise_, l1_prune_, prunable_weights, restored_weights
    from ..analysis.selectivity import selectivity_t
    from ..analysis.smoothness import smoothness, weight_smoothness
    from ..analysis.spatial import mean_morans_i, morans_i

    model.eval()
    normalized = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    clean = _accuracy(model, pixels, labels, mean, std)
    measures: dict[str, Any] = {"accuracy": clean}
    responses = collect_image_activations(model, normalized, layers, batch_size=512, progress=False)
    per_layer: dict[str, dict[str, float]] = {}
    classes = sorted(set(labels.tolist()))
    for layer in layers:
        samples = responses[layer.name]
        curve = smoothness(samples, layer.sheet, max_pairs=None)
        t_maps = torch.stack([selectivity_t(samples[labels == c], samples[labels != c]) for c in classes])
        selectivity = morans_i(as_sheet_map(t_maps.float(), layer.sheet))
        per_layer[layer.name] = {
            "smoothness": curve.score,
            "robust_smoothness": curve.robust_score,
            "weight_smoothness": weight_smoothness(layer).score,
            "effective_dimensionality": effective_dimensionality(samples),
            "morans_i": mean_morans_i(samples, layer.sheet),
            "selectivity_morans_i": _mean(selectivity.tolist()),
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
    generator = torch.Generator().manual_seed(seed)
    drops = []
    for sigma in args.weight_noise_sigmas:
        for _ in range(args.weight_noise_repeats):
            with restored_weights(weights):
                add_weight_noise_(weights, sigma, generator)
                drops.append(_accuracy(model, pixels, labels, mean, std) - clean)
        measures[f"weight_noise_delta_accuracy_{sigma:g}"] = _mean(drops[-args.weight_noise_repeats :])
    measures["weight_noise_delta_accuracy"] = _mean(drops)

    from ..downsampling import downsample_model

    factor = args.downsampling_factor
    smaller = downsample_model(model, factors=(factor, factor), target_modules=[layer.name for layer in layers],
                               gains=False)  # fmt: skip
    measures["downsampling_delta_accuracy"] = _accuracy(smaller, pixels, labels, mean, std) - clean
    measures["downsampling_parameters_kept"] = sum(p.numel() for p in smaller.parameters()) / sum(
        p.numel() for p in model.parameters()
    )
    del smaller

    for kind in NOISE_TYPES:
        generator = torch.Generator().manual_seed(seed)
        deltas = []
        for level in args.noise_levels:
            noisy = add_input_noise(pixels, kind, level, generator)
            deltas.append(_accuracy(model, noisy, labels, mean, std) - clean)
            measures[f"{kind}_delta_accuracy_{level:g}"] = deltas[-1]
        measures[f"{kind}_delta_accuracy"] = _mean(deltas)
    return measures


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
    tau = {"baseline": 0.0, "toponet": args.topo_tau, "ws": args.ws_tau, "as": args.as_tau}[family]
    logger.info("=== seed %d: training %s (τ = %g, %d steps) ===", seed, family, tau, args.max_steps)
    train_vision_model(
        directory, *data, tau=tau, max_steps=args.max_steps, batch_size=args.batch_size, image_size=args.image_size,
        learning_rate=args.learning_rate, seed=seed, model_preset=args.model_preset, **_FAMILY_SETTINGS[family],
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

    measures = _saved_measures(args, seed)
    baseline_dir = _trained(args, seed, "baseline", data)
    processor = AutoImageProcessor.from_pretrained(baseline_dir)
    mean, std = list(processor.image_mean), list(processor.image_std)
    pixels, labels, _ = _load_images(data[1], args.image_size)
    reference = TopoConfig.from_pretrained(baseline_dir)  # every model is measured on the baseline's sheets
    for family in [f for f in VISION_FAMILIES if f in args.families]:
        if family in measures:
            continue
        start = time.perf_counter()
        if family == "untrained":
            model = _untrained(args, seed, baseline_dir)
        else:
            directory = baseline_dir if family == "baseline" else _trained(args, seed, family, data)
            model = AutoModelForImageClassification.from_pretrained(directory, dtype=torch.float32)
        layers = topographic_layers(model, reference)
        measures[family] = measure_vision_model(model, layers, pixels, labels, mean, std, args, seed)
        measures[family]["wall_time_s"] = time.perf_counter() - start
        _save_measures(args, seed, measures)
        logger.info("seed %d, %s: accuracy %.4f", seed, family, measures[family]["accuracy"])
        del model
    return measures


# ---- the table and the figure ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if is_finite(value) else "–"


def vision_claims_markdown(result: dict) -> str:
    """The vision claims as a Markdown table (one row per claim)."""
    lines = [
        "| claim | paper (where) | compared | ours: a | ours: b | difference (mean ± sd) | p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in result["claims"]:
        ours = entry["ours"]
        a, b = ours.get(entry["compared"]["a"], {}), ours.get(entry["compared"]["b"], {})
        lines.append(
            f"| {entry['claim']} | {entry['where']} | {entry['expected']} | "
            f"{_fmt(a.get('mean'))} ± {_fmt(a.get('sd'))} | {_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))} | "
            f"{_fmt(ours['mean'])} ± {_fmt(ours['sd'])} (n = {ours['n_seeds']}) | {_fmt(entry.get('p_value'))} | "
            f"**{entry['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def plot_vision_claims(result: dict, path: str | os.PathLike) -> str:
    """One panel per claim: both models' measure per seed (dots) and its mean (bar), the verdict in the title."""
    from ..analysis.plots import pyplot, save_figure

    plt = pyplot()
    entries = result["claims"]
    columns = 5
    rows = math.ceil(len(entries) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    for ax, entry in zip(axes.flat, entries, strict=False):
        names = [entry["compared"]["a"], entry["compared"]["b"]]
        for i, name in enumerate(names):
            values = entry["ours"][name]["values"]
            ax.bar(i, entry["ours"][name]["mean"] if values else 0, color="lightgray", width=0.6)
            ax.scatter([i] * len(values), values, color="black" if name == "baseline" else "tab:red", zorder=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{entry['id']}\n{entry['metric']}: {entry['verdict']}", fontsize=8)
        ax.axhline(0, color="gray", linewidth=0.5)
    for ax in list(axes.flat)[len(entries) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


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
        "verdict_rule": (
            f"paired one-sided t-test over seeds of sign·(a − b) + margin at alpha = {args.alpha}: reproduced if "
            "significant in the claimed direction, contradicted if significant in the other, else not at this scale; "
            "not measured when the measure is missing or fewer than 2 seeds"
        ),
        "claims": judge_claims(VISION_CLAIMS, per_seed, args.alpha),
        "per_seed": {str(seed): measures for seed, measures in zip(args.seeds, per_seed, strict=True)},
        "versions": {"hf_topo": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - start,
    }
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
