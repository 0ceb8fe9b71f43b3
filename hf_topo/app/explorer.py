"""The TopoNet explorer: what a model's units do, laid out on their cortical sheets, as PNG figures.

:class:`TopoNetExplorer` holds a model (and optionally its baseline and an ``hf-topo analyze`` report) and answers
the questions of the web app (:mod:`hf_topo.app.ui`) with the library's analyses, so that the app adds no math of
its own:

==========================  ===================================================================================
view                        computed with
==========================  ===================================================================================
responses to a text         :func:`~hf_topo.analysis.collect_activations` (one sample per token) laid out with
                            :func:`~hf_topo.analysis.as_sheet_map`; the average over the tokens too
weight map                  :func:`~hf_topo.analysis.weight_pc1_map` (first principal component of the weights)
selectivity                 :func:`~hf_topo.analysis.selectivity_maps`: Welch's t of list a over list b (eq. 2)
temporal windows            the per-layer figures and fits of a ``report.json`` written by ``hf-topo analyze
                            --temporal_windows`` (:mod:`hf_topo.analysis.temporal`)
==========================  ===================================================================================

The baseline is measured on the TopoNet's layers and sheets (its ``TopoConfig``), so the two are drawn side by
side unit for unit. Every figure is a PNG file (a download in the app).

A vision TopoNet (an image classifier) is explored with its image processor instead of a tokenizer: the weight map
(a convolution's units are its output channels, each unit's weights its whole ``in × kh × kw`` kernel) and the
responses to an image (:meth:`TopoNetExplorer.image_responses`): a unit's response is its output averaged over the
image, i.e. a convolution channel's feature map averaged over space, a linear layer's (a ViT's MLP) output averaged
over the tokens (patches and the class token).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..analysis import as_sheet_map, collect_activations, selectivity_maps, topographic_layers, weight_pc1_map
from ..analysis.plots import plot_sheet_maps, pyplot, save_figure
from ..config import TopoConfig
from ..evaluation import TokenBatch
from ..sheet import ACTIVATION_SHEET
from ..targets import TopoLayer, short_layer_name

__all__ = ["TopoNetExplorer", "TokenResponses", "ImageResponses", "read_report", "parse_stimuli"]

logger = logging.getLogger(__name__)

_REPORT_FILE = "report.json"
#: How many of its latest PNGs an explorer keeps in its output folder.
_KEEP_FIGURES = 200


@dataclass
class TokenResponses:
    """One model's responses to a text on one layer.

    Attributes:
        tokens: the text's tokens as strings (the ones shown, after truncation).
        maps: ``(n_tokens, height, width)`` float32: each token's unit activations laid out on the sheet.
    """

    tokens: list[str]
    maps: torch.Tensor

    @property
    def mean_map(self) -> torch.Tensor:
        """The average over the tokens: ``(height, width)``."""
        return self.maps.mean(dim=0)


@dataclass
class ImageResponses:
    """One image classifier's responses to an image on one layer.

    Attributes:
        map: ``(height, width)`` float32: each unit's output averaged over the image (a convolution channel's over
            its spatial positions, a linear layer's over the tokens), laid out on the sheet.
        top_classes: the model's most probable classes for the image, ``[(label, probability), ...]``.
    """

    map: torch.Tensor
    top_classes: list[tuple[str, float]]


def parse_stimuli(text: str, name: str) -> list[str]:
    """One stimulus per non-empty line of ``text`` (a word or a sentence); at least 2 are needed for a variance."""
    if not isinstance(text, str):
        raise TypeError(f"List {name} must be text (one word or sentence per line), got {type(text).__name__}.")
    stimuli = [line.strip() for line in text.splitlines() if line.strip()]
    if len(stimuli) < 2:
        raise ValueError(
            f"List {name} has {len(stimuli)} stimulus/stimuli: type at least 2 words or sentences, one per line "
            "(Welch's t needs a variance in each list)."
        )
    return stimuli


def read_report(path: str | os.PathLike) -> tuple[dict, Path]:
    """``report.json`` of ``hf-topo analyze`` (the file or its folder) and the folder its figures are in."""
    from ..hub.results import read_json

    path = Path(path)
    if path.is_dir():
        path = path / _REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No analysis report at {path}: pass the report.json (or the --output_dir) that hf-topo analyze wrote."
        )
    report = read_json(path)
    if not isinstance(report, dict) or not isinstance(report.get("model"), dict):
        raise ValueError(f"{path} is not a report.json of hf-topo analyze (it has no 'model' entry).")
    return report, path.parent


class TopoNetExplorer:
    """A TopoNet (and optionally its baseline and analysis report) ready to be explored layer by layer.

    Args:
        model: a causal LM; without ``topography`` metadata it gets inferred most-square sheets (and :attr:`note`
            says so). Or an image classifier (a vision TopoNet) with its ``topography`` record.
        tokenizer: its tokenizer (``None`` for an image classifier).
        baseline: a model with the same layers (e.g. the τ=0 twin), measured on ``model``'s sheets.
        report: a ``report.json`` (file or folder) of ``hf-topo analyze`` on this model, for the temporal windows.
        labels: the names of the model and the baseline in the figures.
        max_tokens: longest text measured, in tokens (longer texts are truncated, with a note).
        max_token_panels: most per-token maps drawn in one figure (all tokens still count in the average).
        output_dir: where the PNGs are written (default: a new temporary folder).
        image_processor: an image classifier's image processor (resize and normalisation of an uploaded image).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer=None,
        baseline: nn.Module | None = None,
        report: str | os.PathLike | None = None,
        labels: tuple[str, str] = ("TopoNet", "baseline"),
        max_tokens: int = 64,
        max_token_panels: int = 16,
        output_dir: str | os.PathLike | None = None,
        image_processor=None,
    ):
        from ..hub.loading import is_image_classifier_config
        from ..loading import check_tokenizer

        if max_tokens < 1 or max_token_panels < 1:
            raise ValueError(f"max_tokens={max_tokens} and max_token_panels={max_token_panels} must be at least 1.")
        self.vision = is_image_classifier_config(model)
        if self.vision:
            if image_processor is None or not callable(image_processor):
                raise ValueError(
                    f"{type(model).__name__} is an image classifier: pass its image_processor (e.g. "
                    "AutoImageProcessor.from_pretrained(MODEL_DIR)), which turns an uploaded image into its input."
                )
        else:
            check_tokenizer(tokenizer)
        self.image_processor = image_processor
        self.model = model.eval()
        self.tokenizer = tokenizer
        # hf_topo.analysis's activation analyses are for language models; a vision model's sheets (Conv2d included)
        # are resolved here, for the views this explorer computes itself
        layers_of = _vision_layers if self.vision else topographic_layers
        self.layers: dict[str, TopoLayer] = {layer.name: layer for layer in layers_of(model)}
        self.config = TopoConfig.from_pretrained(model)
        self.inferred = bool(self.config.inferred)
        self.baseline = baseline.eval() if baseline is not None else None
        self.baseline_layers: dict[str, TopoLayer] = {}
        if baseline is not None:
            # the TopoNet's layers and sheets on the baseline (an error if its shapes differ)
            self.baseline_layers = {layer.name: layer for layer in layers_of(baseline, self.config)}
        self.labels = labels
        n_positions = getattr(getattr(model, "config", None), "n_positions", None) or getattr(
            getattr(model, "config", None), "max_position_embeddings", None
        )
        self.max_tokens = min(max_tokens, n_positions) if n_positions else max_tokens
        self.max_token_panels = max_token_panels
        self.report, self.report_dir = (None, None) if report is None else read_report(report)
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="hf_topo_app_"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._written: collections.deque[Path] = collections.deque()
        self._weight_maps: dict[tuple[str, str], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        baseline: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
        report: str | os.PathLike | None = None,
        **kwargs,
    ) -> TopoNetExplorer:
        """Load ``model`` (a Hub id or folder, :func:`hf_topo.hub.load_toponet`; inferred sheets when it has no
        topography record), its tokenizer (from ``tokenizer`` or the model's folder; an image classifier: its image
        processor, from the same places) and the optional ``baseline``."""
        from ..hub.loading import is_image_classifier_config, load_toponet
        from ..loading import load_tokenizer

        loaded = load_toponet(model, infer_if_missing=True)
        loaded_baseline = None if baseline is None else load_toponet(baseline, infer_if_missing=True)
        if is_image_classifier_config(loaded):
            from ..hub.upload import load_image_processor

            processor = load_image_processor(tokenizer if tokenizer is not None else model)
            return cls(loaded, baseline=loaded_baseline, report=report, image_processor=processor, **kwargs)
        loaded_tokenizer = load_tokenizer(tokenizer if tokenizer is not None else model)
        return cls(loaded, loaded_tokenizer, baseline=loaded_baseline, report=report, **kwargs)

    # ---- what the page shows about the model ------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def note(self) -> str:
        """Markdown: the model's topographic layers and sheets, and a warning when the sheets are inferred."""
        sheets = sorted({f"{layer.sheet.height}×{layer.sheet.width}" for layer in self.layers.values()})
        lines = [
            f"**{len(self.layers)} topographic layer(s)**, sheet(s) {', '.join(sheets)}, τ = {self.config.tau:g}."
        ]
        if self.inferred:
            lines.append(
                "⚠️ **Inferred sheets**: this model has no topography record (it was not trained with hf_topo, or "
                "was published without its metadata). Its units are laid out on most-square sheets of its MLP "
                "expansion layers in their stored order, so any smoothness seen here is not evidence of training "
                "with TopoLoss."
            )
        if self.vision:
            lines.append(
                "An image classifier: a unit's **response to an image** is its output averaged over the image (a "
                "convolution channel's feature map averaged over space, a linear layer's output averaged over the "
                "tokens); a convolution's **weight map** uses each output channel's whole kernel (in × k × k)."
            )
        if self.baseline is not None:
            lines.append(f"Baseline shown beside it, on the same sheets ({self.labels[1]}).")
        if self.report is not None:
            lines.append(f"Analysis report: {self.report_dir / _REPORT_FILE}.")
        return "\n\n".join(lines)

    def resolve_layer(self, name: str | None) -> str:
        """The full name of a topographic layer from its name or a suffix (``h.0.mlp.c_fc``)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Choose a layer: one of {', '.join(self.layer_names)}.")
        name = name.strip()
        matches = [n for n in self.layer_names if n == name or n.endswith("." + name)]
        if len(matches) != 1:
            problem = "is not a topographic layer of this model" if not matches else "matches several layers"
            raise ValueError(f"Layer {name!r} {problem}; choose one of {', '.join(self.layer_names)}.")
        return matches[0]

    def _models(self, layer_name: str) -> list[tuple[str, nn.Module, TopoLayer]]:
        pairs = [(self.labels[0], self.model, self.layers[layer_name])]
        if self.baseline is not None:
            pairs.append((self.labels[1], self.baseline, self.baseline_layers[layer_name]))
        return pairs

    # ---- the analyses -----------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> tuple[torch.Tensor, list[str], bool]:
        """``(input_ids (1, T), token strings, truncated)`` of ``text`` (no special tokens, at most ``max_tokens``)."""
        if self.vision:
            raise ValueError("This model is an image classifier: it reads images, not text (upload an image).")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Type some text first: the maps show each unit's response to its tokens.")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{text!r} tokenizes to no tokens with this model's tokenizer: type other text.")
        truncated = len(ids) > self.max_tokens
        ids = ids[: self.max_tokens]
        tokens = [self.tokenizer.decode([i]) for i in ids]
        return torch.tensor([ids], dtype=torch.long), tokens, truncated

    def token_responses(self, text: str, layer: str) -> tuple[dict[str, TokenResponses], bool]:
        """Each model's responses to ``text`` on ``layer``: ``({label: TokenResponses}, truncated)``.

        A unit's response to a token is the layer's output at that token (the pre-activation for GPT-2's ``c_fc``:
        :func:`~hf_topo.analysis.collect_activations`).
        """
        name = self.resolve_layer(layer)
        input_ids, tokens, truncated = self.tokenize(text)
        responses = {}
        for label, model, topo_layer in self._models(name):
            acts = collect_activations(model, TokenBatch(input_ids), [topo_layer], progress=False)[name]  # (T, units)
            responses[label] = TokenResponses(tokens, as_sheet_map(acts, topo_layer.sheet))
        return responses, truncated

    def pixel_values(self, image) -> torch.Tensor:
        """``(1, 3, H, W)``: an image (PIL image, ``(H, W[, 3])`` uint8 array, or path) through the image processor."""
        from PIL import Image

        if not self.vision:
            raise ValueError("This model reads text, not images: use the responses to a text.")
        if image is None:
            raise ValueError("Upload an image first: the maps show each unit's response to it.")
        if isinstance(image, (str, os.PathLike)):
            image = Image.open(image)
        elif not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.ndim not in (2, 3) or array.size == 0:
                raise ValueError(
                    f"Expected an image (height × width [× channels]), got an array of shape {array.shape}."
                )
            image = Image.fromarray(array.astype(np.uint8))
        return self.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def image_responses(self, image, layer: str, top_k: int = 3) -> dict[str, ImageResponses]:
        """Each model's responses to ``image`` on ``layer``: ``{label: ImageResponses}``.

        A unit's response is the layer's output for that unit averaged over the image: a Conv2d output ``(1, C, H,
        W)`` over its ``H × W`` positions (channel ``c`` is unit ``c`` of the sheet), a Linear output ``(1, T, units)``
        over its ``T`` tokens.
        """
        name = self.resolve_layer(layer)
        pixel_values = self.pixel_values(image)
        responses = {}
        for label, model, topo_layer in self._models(name):
            captured: list[torch.Tensor] = []
            handle = topo_layer.module.register_forward_hook(
                lambda m, i, o, out=captured: out.append(o.detach().float())
            )
            try:
                logits = model(pixel_values=pixel_values).logits[0]
            finally:
                handle.remove()
            output = captured[0]
            per_unit = output.mean(dim=(2, 3)) if output.ndim == 4 else output.reshape(1, -1, output.shape[-1]).mean(1)
            probabilities = logits.float().softmax(-1)
            best = probabilities.topk(min(top_k, probabilities.numel()))
            id2label = getattr(model.config, "id2label", None) or {}
            top = [
                (str(id2label.get(int(i), int(i))), float(p)) for p, i in zip(best.values, best.indices, strict=True)
            ]
            responses[label] = ImageResponses(as_sheet_map(per_unit[0], topo_layer.sheet), top)
        return responses

    def weight_maps(self, layer: str, use_cache: bool = True) -> dict[str, torch.Tensor]:
        """``{label: (height, width)}``: the first principal component of each unit's weights (sign arbitrary).

        The maps of a layer are computed once (an SVD of the ``(n_units, depth)`` weights) unless ``use_cache=False``.
        """
        name = self.resolve_layer(layer)
        maps = {}
        for label, _, topo_layer in self._models(name):
            if topo_layer.sheet.layer_type == ACTIVATION_SHEET:
                raise ValueError(
                    f"{name} is an activation sheet (TopoLM's placement): it has no weights to map. The responses and "
                    "selectivity views show its units."
                )
            if not use_cache or (label, name) not in self._weight_maps:
                self._weight_maps[(label, name)] = weight_pc1_map(topo_layer)
            maps[label] = self._weight_maps[(label, name)]
        return maps

    def selectivity(self, stimuli_a: Sequence[str], stimuli_b: Sequence[str], layer: str) -> dict[str, torch.Tensor]:
        """``{label: (height, width)}`` Welch t-maps of every unit for ``stimuli_a`` over ``stimuli_b`` (eq. 2)."""
        name = self.resolve_layer(layer)
        if self.vision:
            raise ValueError("This model is an image classifier: selectivity between lists of text does not apply.")
        for stimuli, which in ((stimuli_a, "a"), (stimuli_b, "b")):
            if len(stimuli) < 2:
                raise ValueError(f"List {which} needs at least 2 stimuli (one per line), got {len(stimuli)}.")
        return {
            label: selectivity_maps(
                model, self.tokenizer, stimuli_a, stimuli_b, [topo_layer], max_length=self.max_tokens, progress=False
            )[name]
            for label, model, topo_layer in self._models(name)
        }

    def temporal_windows(self, layer: str) -> tuple[list[Path], str]:
        """The report's temporal-window figures of ``layer`` (model, then baseline) and a Markdown table of its fits."""
        name = self.resolve_layer(layer)
        if self.report is None:
            raise ValueError(
                "No analysis report loaded: start the app with --report pointing to the report.json of "
                "`hf-topo analyze --temporal_windows` on this model."
            )
        figures = self.report.get("figures") or {}
        suffix = "_" + name
        paths = [
            self.report_dir / file
            for key, file in figures.items()
            if key.startswith("temporal_maps_") and key.endswith(suffix) and (self.report_dir / file).is_file()
        ]
        rows = []
        for which in ("model", "baseline"):
            entry = self.report.get(which) or {}
            fits = ((entry.get("temporal_windows") or {}).get("fits") or {}).get("layers") or {}
            if name in fits:
                fit = fits[name]
                shares = fit.get("fractions", {})
                morans = fit.get("morans_i", {})
                rows.append(
                    f"| {entry.get('label', which)} | "
                    + " | ".join(_percent(shares.get(k)) for k in ("exponential", "power_law", "neither", "delta"))
                    + f" | {_number(fit.get('median_c'))} | {_number(morans.get('c'))} | {_number(morans.get('reach'))} |"
                )
        if not paths and not rows:
            raise ValueError(
                f"The report has no temporal windows for {name}: run `hf-topo analyze --temporal_windows` (on this "
                "layer) and pass its report.json with --report."
            )
        table = (
            "| model | exponential | power-law | neither | delta | median c | Moran's I of c | Moran's I of reach |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
        )
        return paths, table if rows else ""

    # ---- figures ----------------------------------------------------------------------------------------------

    def _new_path(self, kind: str, layer: str) -> Path:
        slug = re.sub(r"[^\w.-]", "_", short_layer_name(layer))
        path = self.output_dir / f"{kind}_{slug}_{next(self._counter)}.png"
        # a long-running server keeps only the latest figures (the page has copies of what it shows)
        self._written.append(path)
        while len(self._written) > _KEEP_FIGURES:
            self._written.popleft().unlink(missing_ok=True)
        return path

    def plot_token_responses(self, responses: dict[str, TokenResponses], layer: str) -> Path:
        """One PNG: per model, the average map and each token's map (shared colour scale within a model)."""
        plt = pyplot()
        n_models = len(responses)
        first = next(iter(responses.values()))
        n_shown = min(len(first.tokens), self.max_token_panels)
        height, width = first.maps.shape[-2:]
        columns = min(n_shown, 8)
        token_rows = math.ceil(n_shown / columns)
        cell = 2.0
        aspect = height / width
        fig = plt.figure(figsize=(cell * (columns + 2.2), n_models * (cell * aspect * max(token_rows, 2) + 0.9)))
        subfigures = fig.subfigures(n_models, 1, squeeze=False)[:, 0]
        for subfig, (label, response) in zip(subfigures, responses.items(), strict=True):
            maps = response.maps
            bound = float(maps.abs().max()) or 1.0
            grid = subfig.add_gridspec(token_rows, columns + 2, width_ratios=[2, 0.2] + [1] * columns)
            ax = subfig.add_subplot(grid[:, 0])
            mean = response.mean_map
            mean_bound = float(mean.abs().max()) or 1.0
            image = ax.imshow(mean.numpy(), cmap="RdBu_r", vmin=-mean_bound, vmax=mean_bound, interpolation="nearest")
            subfig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"{label}: mean over {len(response.tokens)} tokens", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for k in range(n_shown):
                ax = subfig.add_subplot(grid[k // columns, 2 + k % columns])
                ax.imshow(maps[k].numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
                ax.set_title(repr(response.tokens[k]), fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
            subfig.suptitle(
                f"{label} — {short_layer_name(layer)} ({height}×{width} sheet): response per token (colour scale ±{bound:.2g})",
                fontsize=9,
            )
        return Path(save_figure(fig, self._new_path("responses", layer), dpi=90))

    def plot_maps(self, maps: dict[str, torch.Tensor], layer: str, kind: str, title: str, symmetric: bool) -> Path:
        """One PNG of one map per model, side by side (:func:`hf_topo.analysis.plots.plot_sheet_maps`; ``symmetric``:
        the colour scale centred on 0, e.g. for t-values)."""
        height, width = next(iter(maps.values())).shape
        path = self._new_path(kind, layer)
        plot_sheet_maps(
            {label: {title: {layer: values}} for label, values in maps.items()},
            path,
            title=f"{short_layer_name(layer)} ({height}×{width} sheet)",
            symmetric=symmetric,
        )
        return path


def _vision_layers(model: nn.Module, config: TopoConfig | None = None) -> list[TopoLayer]:
    """The target layers of an image classifier's record (or of ``config``: a baseline on the TopoNet's sheets)."""
    from ..metadata import stored_topography
    from ..targets import resolve_sheets

    if config is None:
        if not isinstance(stored_topography(model), dict):
            raise ValueError(
                f"This {type(model).__name__} has no topography record: the explorer shows a vision TopoNet's sheets "
                "(train one with hf-topo pretrain --train_dir, or convert the authors' with hf-topo convert-toponet)."
            )
        config = TopoConfig.from_pretrained(model)
    return [layer for layer in resolve_sheets(model, config) if layer.role == "target"]


def _percent(value) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _number(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"
