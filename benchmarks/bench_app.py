"""Latency of the TopoNet explorer's requests on a GPT-2-124M-shaped model on the CPU, next to a bare forward pass.

    python benchmarks/bench_app.py                                  # GPT-2-124M shapes, random weights, CPU
    python benchmarks/bench_app.py --threads 2 --repeats 5
    python benchmarks/bench_app.py --n_layer 2 --n_embd 64 --repeats 2 --no_http   # smoke configuration

The model is a randomly initialised ``GPT2LMHeadModel`` (no download; the defaults are GPT-2-124M: 12 blocks,
768 wide, 50257 tokens) with TopoNet sheets recorded on its 12 ``mlp.c_fc`` layers (48 × 64 units each); the
tokenizer is a byte-level BPE trained here on a small synthetic text (random weights and a toy tokenizer cost what
the real ones cost: the shapes decide). Timed, each as the page runs it:

* ``forward``: the reference, one bare forward pass of the model on the sentence (``torch.inference_mode``);
* ``responses``: the "Responses to a text" view, :meth:`TopoNetExplorer.token_responses` (a forward pass with a hook)
  and its PNG (per-token and mean maps);
* ``weights``: the weight-PC1 view of one layer and its PNG (first request of a layer: the SVD is not cached);
* ``selectivity``: two lists of 4 sentences, Welch t-map and PNG;
* ``http_responses``: the same "responses" request end to end through the served app (``gradio_client`` →
  HTTP → queue → handler → PNG back), unless ``--no_http``.

``--repeats`` rounds, each timing every request once in an order that rotates from round to round (so that the
load of a shared machine hits all alike); medians in ms and the ratio to the bare forward pass.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402
from _common import default_output, device_info, device_line, write_json  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_topo import TopoConfig, TopoRegularizer  # noqa: E402
from hf_topo.app import TopoNetExplorer  # noqa: E402
from hf_topo.data import train_bpe_tokenizer  # noqa: E402

SENTENCE = "The old lighthouse keeper watched the storm roll in across the grey harbour before dawn."
LIST_A = ["The dog chased the ball.", "A bird sang in the tree.", "The horse ran home.", "The cat slept all day."]
LIST_B = ["The market fell today.", "Rates rose again.", "The bank raised its fees.", "Prices went up in May."]


def _toy_corpus() -> str:
    words = (SENTENCE + " " + " ".join(LIST_A + LIST_B)).split()
    return "\n".join(" ".join(words[(i * 7) % len(words) :] + words[: (i * 7) % len(words)]) for i in range(400))


def time_rotating(passes: dict, repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds timing each pass once (ms), the order rotating each round so that the machine's noise
    (a loaded machine) hits every pass alike."""
    names = list(passes)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            passes[name]()
            times[name].append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_layer", type=int, default=12)
    parser.add_argument("--n_embd", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no_http", action="store_true", help="skip the end-to-end request through the server")
    parser.add_argument("--output", default=default_output(__file__))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64)))
    TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], tau=1.0)).config_for(model).attach_to(model.config)
    tokenizer = train_bpe_tokenizer([_toy_corpus()], vocab_size=2000)
    explorer = TopoNetExplorer(model, tokenizer)
    layer = explorer.layer_names[len(explorer.layer_names) // 2]
    ids = explorer.tokenize(SENTENCE)[0]
    n_params = sum(p.numel() for p in model.parameters())
    sheet = explorer.layers[layer].sheet
    print(f"{device_line(device_info('cpu'))}")
    print(f"model: {n_params / 1e6:.1f}M parameters, layer {layer} on a {sheet.height}x{sheet.width} sheet, "
          f"sentence of {ids.shape[1]} tokens")  # fmt: skip

    def forward():
        with torch.inference_mode():
            model(input_ids=ids)

    def responses():
        maps, _ = explorer.token_responses(SENTENCE, layer)
        explorer.plot_token_responses(maps, layer)

    def weights():
        maps = explorer.weight_maps(layer, use_cache=False)  # as the first request of a layer
        explorer.plot_maps(maps, layer, "weights", "weight PC1", symmetric=True)

    def selectivity():
        explorer.plot_maps(explorer.selectivity(LIST_A, LIST_B, layer), layer, "selectivity", "t", symmetric=True)

    timings = {"forward": forward, "responses": responses, "weights": weights, "selectivity": selectivity}
    demo = None
    if not args.no_http:
        from gradio_client import Client

        from hf_topo.app import launch_explorer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        demo = launch_explorer(explorer, port=port, prevent_thread_lock=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        timings["http_responses"] = lambda: client.predict(layer, SENTENCE, api_name="/responses")
    try:
        for fn in timings.values():  # warm-up (lazy imports, allocator)
            fn()
        times = time_rotating(timings, args.repeats)
    finally:
        if demo is not None:
            demo.close()
    results = {name: statistics.median(values) for name, values in times.items()}

    print(f"\n{'request':<16} {'median ms':>10} {'× forward':>10}")
    for name, ms in results.items():
        print(f"{name:<16} {ms:>10.0f} {ms / results['forward']:>10.1f}")
    write_json(
        args.output,
        {
            "machine": device_info("cpu"),
            "model": {
                "n_layer": args.n_layer,
                "n_embd": args.n_embd,
                "n_parameters": n_params,
                "layer": layer,
                "sheet": [sheet.height, sheet.width],
            },  # fmt: skip
            "sentence_tokens": int(ids.shape[1]),
            "repeats": args.repeats,
            "times_ms": times,
            "median_ms": results,
            "ratio_to_forward": {name: ms / results["forward"] for name, ms in results.items()},
        },
    )


if __name__ == "__main__":
    main()
