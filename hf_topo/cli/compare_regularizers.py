"""Compare the regularizers: no regularizer, TopoLoss, Weight Similarity, Activation Similarity and TopoLM's
spatial-correlation loss on the same tiny model and data, at a few strengths each; a table and a figure of what each
does to the model.

    hf-topo compare-regularizers --train_file tinyshakespeare.txt \\
        --strengths topo=1,5 ws=0.5,2 as=0.5,2 topolm=5,20 --max_steps 300 --output_dir outputs/regularizers

Every model is trained on one recipe (`hf_topo.experiments.families.train_family`: data, tokenizer, seed, optimizer,
steps); only the regularizer (`--topo_loss_type`) and its strength (`--tau`) differ. The baseline (τ=0) trains the
byte-level BPE tokenizer and every other model reuses it. Weight / Activation Similarity use `--topo_distance
correlation` (Truong & Hasson's choice) unless told otherwise. TopoLM models put the loss on TopoLM's sites
(`--topolm_placement`, default the residual stream after every attention and MLP: `hf_topo.presets.topolm_targets`)
with `--topolm_radius` (default 3, a 5×5 window, since a tiny model's hidden size is a small sheet) and
`--topolm_neighbourhoods`. Without `--validation_file`, the last `--validation_fraction` of the training file's lines
is held out (written to `<output_dir>/data/`): models are evaluated and analysed on it only.

Each model is then analysed on the held-out text with `hf_topo.analysis.analyze_model`, all on the baseline's layers
and sheets: eval loss and perplexity, the three regularizers measured post hoc with shared settings (TopoLoss with
the default blur, WS and AS with the comparison's distance, TopoLM's loss with the comparison's radius on the analysed
layers' activations; `hf_topo.analysis.regularizer_values`), smoothness of activations and weights, Moran's I,
effective dimensionality, and Δ perplexity under weight noise, random token substitution and token deletion
(`--sweeps` adds `pruning`, `downsampling`). Every `AnalysisSettings` field is a flag (`--max_tokens`,
`--eval_blocks`, `--noise_sigmas 0 0.5 1`, `--input_rates 0 0.1 0.3`, ...); any flag this command does not know is a
`hf-topo pretrain` setting applied to every model alike (e.g. `--weight_decay 0.05`). `--seed` seeds every model's
initialization and data order, and the analysis.

Writes `comparison.json` (the recipe and everything measured), `comparison.md` (the table) and `regularizers.png`
to `--output_dir`, and prints the table. The experiment is `hf_topo.experiments.compare_regularizers`.
"""

from __future__ import annotations

import logging
import sys

from hf_topo.analysis import AnalysisSettings
from hf_topo.cli.arguments import explicit_flags, make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.experiments.compare_regularizers import (
    ANALYSIS_DEFAULTS,
    CompareArguments,
    check_pretrain_settings,
    compare_regularizers,
)
from hf_topo.pretraining import DataArguments, ModelArguments
from hf_topo.trainer import TopoTrainingArguments


def make_parser(prog: str | None = None):
    parser = make_argument_parser((CompareArguments, AnalysisSettings), prog, __doc__)
    parser.set_defaults(**ANALYSIS_DEFAULTS)
    return parser


def parse_args(
    argv: list[str] | None = None, prog: str | None = None
) -> tuple[CompareArguments, AnalysisSettings, dict]:
    """The comparison's arguments, the analysis settings and the pretraining settings given as extra flags."""
    args, settings, extra = parse_command_line(make_parser(prog), argv, allow_extra_flags=True)
    pretrain_settings = explicit_flags((ModelArguments, DataArguments, TopoTrainingArguments), extra)
    check_pretrain_settings(pretrain_settings)
    return args, settings, pretrain_settings


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging(logging.WARNING)  # seven trainings and analyses: their progress bars say enough
    argv = sys.argv[1:] if argv is None else argv
    return compare_regularizers(*parse_args(argv, prog), command="hf-topo compare-regularizers " + " ".join(argv))


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo compare-regularizers"))
