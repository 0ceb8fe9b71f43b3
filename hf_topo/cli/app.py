"""Explore a TopoNet in the browser: its units' responses, weight map and selectivity on the cortical sheets.

    pip install "hf_topo[app]"
    hf-topo app --model outputs/toponet                       # then open http://127.0.0.1:7860
    hf-topo app --model outputs/demo/toponet --baseline outputs/demo/baseline --report outputs/demo/analysis --port 8080

`--model` and `--baseline` are local folders or Hub ids; a model without a topography record gets inferred sheets
(the page says so). `--report` is the report.json (or the --output_dir) of `hf-topo analyze --temporal_windows`,
whose temporal-window maps the page shows. The server listens on 127.0.0.1 only, with no share link and Gradio's
telemetry off; stop it with Ctrl+C.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging


@dataclass
class AppArguments:
    """Which model to explore and where the page is served."""

    model: str = field(metadata={"help": "The TopoNet: a saved model folder or a Hub id."})
    baseline: str | None = field(default=None, metadata={"help": "Its baseline (folder or Hub id), shown beside it."})
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer (folder or Hub id) if the model folder has none."}
    )
    report: str | None = field(
        default=None, metadata={"help": "report.json (or its folder) of hf-topo analyze, for the temporal windows."}
    )
    port: int = field(default=7860, metadata={"help": "Port of the page (http://HOST:PORT)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0 to serve a network)."})
    max_tokens: int = field(default=64, metadata={"help": "Longest text measured, in tokens."})
    title: str = field(default="TopoNet explorer", metadata={"help": "Title of the page."})


def make_parser(prog: str | None = None):
    return make_argument_parser(AppArguments, prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None):
    """Load the model(s) and serve the explorer; returns the launched ``gradio.Blocks``."""
    import importlib.util

    from hf_topo.app import TopoNetExplorer, launch_explorer

    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    if importlib.util.find_spec("gradio") is None:  # before the model is loaded
        raise ImportError('hf-topo app needs gradio: pip install "hf_topo[app]" (or pip install gradio).')
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port: use one in 1-65535 (e.g. 7860).")
    explorer = TopoNetExplorer.from_pretrained(
        args.model, baseline=args.baseline, tokenizer=args.tokenizer, report=args.report, max_tokens=args.max_tokens
    )
    print(f"Serving the TopoNet explorer of {args.model} on http://{args.host}:{args.port} (Ctrl+C stops it)")
    return launch_explorer(explorer, host=args.host, port=args.port, title=args.title)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo app"))
