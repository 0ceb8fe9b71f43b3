"""The explorer's web page: a ``gradio.Blocks`` over a :class:`~hf_topo.app.explorer.TopoNetExplorer`.

Every view is a button (and an API endpoint of the same name, for ``gradio_client``) that returns
``(figure PNG, the same PNG as a download, message)`` (``/temporal``: the model's figure, the baseline's, the files,
the message). Bad input (an empty text, an unknown layer, a list with one
stimulus, no report) comes back as the message, shown in the page, never as a traceback.

===================  =======================================================================================
API endpoint         inputs → outputs
===================  =======================================================================================
``/responses``       layer, text → per-token and averaged response maps
``/weights``         layer → first principal component of the weights
``/selectivity``     layer, list a, list b (one per line) → Welch t-maps of a over b
``/temporal``        layer → the report's temporal-window figures (model, baseline), their files, a table of the
                     fits
===================  =======================================================================================

For an image classifier (a vision TopoNet) the page has two views instead: ``/image_responses`` (layer, an uploaded
image → each unit's response averaged over the image, on the sheet, and the model's top classes) and ``/weights``.
"""

from __future__ import annotations

import logging
import os

from .explorer import TopoNetExplorer, parse_stimuli

__all__ = ["build_explorer", "launch_explorer", "EXAMPLE_TEXT", "EXAMPLE_LIST_A", "EXAMPLE_LIST_B"]

logger = logging.getLogger(__name__)

EXAMPLE_TEXT = "The cat sat on the warm mat and watched the birds outside."
EXAMPLE_LIST_A = "The dog chased the ball.\nA bird sang in the tree.\nThe horse ran across the field."
EXAMPLE_LIST_B = "The stock market fell today.\nInterest rates rose again.\nThe bank raised its fees."

#: The errors a user's input can cause: shown as a message in the page.
_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError)


def _gradio():
    # No telemetry, no version check: the app must work on machines without a network (and say nothing to anyone).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise ImportError(
            'The TopoNet explorer needs gradio: pip install "hf_topo[app]" (or pip install gradio).'
        ) from None
    return gr


def _failure(err: Exception) -> tuple[None, None, str]:
    logger.info("Explorer input refused: %s", err)
    return None, None, f"⚠️ {err}"


def _figure_outputs(gr, name: str, label: str) -> list:
    """A view's outputs, in its handler's order: the figure, its PNG download, the message (shown above the figure)."""
    message = gr.Markdown(elem_id=f"{name}-message")
    image = gr.Image(type="filepath", label=label, elem_id=f"{name}-map")
    download = gr.File(label="PNG download")
    return [image, download, message]


def build_explorer(explorer: TopoNetExplorer, title: str = "TopoNet explorer"):
    """The ``gradio.Blocks`` app of ``explorer`` (not launched: call ``.launch()`` or :func:`launch_explorer`)."""
    gr = _gradio()

    def responses(layer: str, text: str):
        try:
            maps, truncated = explorer.token_responses(text, layer)
            name = explorer.resolve_layer(layer)
            path = str(explorer.plot_token_responses(maps, name))
        except _INPUT_ERRORS as err:
            return _failure(err)
        n_tokens = len(next(iter(maps.values())).tokens)
        message = f"{n_tokens} token(s) on {name}."
        if truncated:
            message += f" The text was cut to its first {explorer.max_tokens} tokens."
        if n_tokens > explorer.max_token_panels:
            message += f" The first {explorer.max_token_panels} tokens are drawn; the mean is over all {n_tokens}."
        return path, path, message

    def weights(layer: str):
        try:
            name = explorer.resolve_layer(layer)
            path = str(
                explorer.plot_maps(
                    explorer.weight_maps(name), name, "weights", "weights' first principal component", symmetric=True
                )
            )
        except _INPUT_ERRORS as err:
            return _failure(err)
        return path, path, f"First principal component of the units' weight vectors on {name} (its sign is arbitrary)."

    def selectivity(layer: str, list_a: str, list_b: str):
        try:
            name = explorer.resolve_layer(layer)
            stimuli_a, stimuli_b = parse_stimuli(list_a, "a"), parse_stimuli(list_b, "b")
            maps = explorer.selectivity(stimuli_a, stimuli_b, name)
            path = str(explorer.plot_maps(maps, name, "selectivity", "Welch t, list a over list b", symmetric=True))
        except _INPUT_ERRORS as err:
            return _failure(err)
        shares = ", ".join(
            f"{label}: {float((t.abs() > 2).double().mean()):.0%} of units with |t| > 2" for label, t in maps.items()
        )
        return path, path, f"{len(stimuli_a)} vs {len(stimuli_b)} stimuli on {name}. {shares}."

    def temporal(layer: str):
        try:
            paths, table = explorer.temporal_windows(layer)
        except _INPUT_ERRORS as err:
            return None, None, None, f"⚠️ {err}"
        files = [str(p) for p in paths]
        shown = (files + [None, None])[:2]  # the model's figure, then the baseline's
        return *shown, files or None, table or "The report has figures but no fits for this layer."

    if explorer.vision:
        return _build_vision_explorer(gr, explorer, title, weights)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n\n{explorer.note}", elem_id="model-note")
        layer = gr.Dropdown(
            choices=explorer.layer_names,
            value=explorer.layer_names[0],
            label="Layer (its units laid out on the cortical sheet)",
            allow_custom_value=True,  # a typed name or suffix is checked by the explorer, with a message
            elem_id="layer",
        )
        with gr.Tab("Responses to a text"):
            text = gr.Textbox(value=EXAMPLE_TEXT, label="Text", lines=2, elem_id="text-input")
            show = gr.Button("Show responses", variant="primary", elem_id="show-responses")
            response_outputs = _figure_outputs(gr, "responses", "Responses on the sheet")
        with gr.Tab("Weight map"):
            show_weights = gr.Button("Show weight map", elem_id="show-weights")
            weight_outputs = _figure_outputs(gr, "weights", "Weight PC1 on the sheet")
        with gr.Tab("Selectivity"):
            with gr.Row():
                list_a = gr.Textbox(value=EXAMPLE_LIST_A, label="List a (one per line)", lines=4)
                list_b = gr.Textbox(value=EXAMPLE_LIST_B, label="List b (one per line)", lines=4)
            show_selectivity = gr.Button("Show selectivity (a over b)", elem_id="show-selectivity")
            selectivity_outputs = _figure_outputs(gr, "selectivity", "Welch t on the sheet")
        with gr.Tab("Temporal windows"):
            show_temporal = gr.Button("Show temporal-window maps", elem_id="show-temporal")
            temporal_message = gr.Markdown(elem_id="temporal-message")
            temporal_model = gr.Image(
                type="filepath", label="Integration windows: the model", elem_id="temporal-model"
            )
            temporal_baseline = gr.Image(type="filepath", label="Integration windows: its baseline")
            temporal_files = gr.File(label="PNG downloads", file_count="multiple")

        show.click(responses, [layer, text], response_outputs, api_name="responses")
        text.submit(responses, [layer, text], response_outputs, api_name=False)
        show_weights.click(weights, [layer], weight_outputs, api_name="weights")
        show_selectivity.click(
            selectivity,
            [layer, list_a, list_b],
            selectivity_outputs,
            api_name="selectivity",
        )
        show_temporal.click(
            temporal,
            [layer],
            [temporal_model, temporal_baseline, temporal_files, temporal_message],
            api_name="temporal",
        )
    return demo


def _build_vision_explorer(gr, explorer: TopoNetExplorer, title: str, weights):
    """The page of an image classifier: responses to an uploaded image, and the weight map."""

    def image_responses(layer: str, image):
        try:
            name = explorer.resolve_layer(layer)
            responses = explorer.image_responses(image, name)
            path = str(
                explorer.plot_maps(
                    {label: r.map for label, r in responses.items()},
                    name,
                    "image_responses",
                    "response, averaged over the image",
                    symmetric=True,
                )
            )
        except _INPUT_ERRORS as err:
            return _failure(err)
        top = "; ".join(
            f"{label}: " + ", ".join(f"{cls} {p:.0%}" for cls, p in r.top_classes) for label, r in responses.items()
        )
        how = (
            "each channel's feature map averaged over space"
            if explorer.layers[name].sheet.layer_type == "Conv2d"
            else ("each unit's output averaged over the tokens")
        )
        return path, path, f"Responses on {name} ({how}). Top classes — {top}."

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n\n{explorer.note}", elem_id="model-note")
        layer = gr.Dropdown(
            choices=explorer.layer_names,
            value=explorer.layer_names[0],
            label="Layer (its units laid out on the cortical sheet)",
            allow_custom_value=True,
            elem_id="layer",
        )
        with gr.Tab("Responses to an image"):
            image = gr.Image(type="pil", label="Image", elem_id="image-input")
            show = gr.Button("Show responses", variant="primary", elem_id="show-image-responses")
            response_outputs = _figure_outputs(gr, "image-responses", "Responses on the sheet")
        with gr.Tab("Weight map"):
            show_weights = gr.Button("Show weight map", elem_id="show-weights")
            weight_outputs = _figure_outputs(gr, "weights", "Weight PC1 on the sheet")
        show.click(image_responses, [layer, image], response_outputs, api_name="image_responses")
        show_weights.click(weights, [layer], weight_outputs, api_name="weights")
    return demo


def launch_explorer(
    explorer: TopoNetExplorer,
    host: str = "127.0.0.1",
    port: int = 7860,
    title: str = "TopoNet explorer",
    prevent_thread_lock: bool = False,
):
    """Serve the explorer on ``http://host:port`` (no share link: it stays on this machine); returns the Blocks."""
    demo = build_explorer(explorer, title=title)
    demo.queue(default_concurrency_limit=1)  # one model, one request at a time: torch uses every core anyway
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=prevent_thread_lock,
        allowed_paths=[str(explorer.output_dir)] + ([str(explorer.report_dir)] if explorer.report_dir else []),
        show_error=True,
    )
    return demo
