"""The ``hf-topo`` commands: a module per subcommand, each with a ``make_parser()`` and a ``main(argv)``.

    hf-topo pretrain --train_file corpus.txt --tau 5 --max_steps 300 --output_dir outputs/toponet
    hf-topo pretrain recipe.yaml                       # every flag from a YAML/JSON file (flags after it override)
    hf-topo analyze --model outputs/toponet --text_file heldout.txt --output_dir outputs/analysis
    accelerate launch -m hf_topo.cli.pretrain --config recipe.yaml    # the same command on several processes

Every subcommand runs as ``python -m hf_topo.cli.<module>`` and under ``accelerate launch -m hf_topo.cli.<module>``;
``hf-topo COMMAND --help`` lists its flags. The dispatcher (the table of commands, ``hf-topo --help``) is
:mod:`hf_topo_cli`, a top-level module, so that listing the commands does not import hf_topo (whose import registers
model classes with transformers, and so imports torch); ``python -m hf_topo.cli`` runs the same dispatcher.
"""

from hf_topo_cli import COMMANDS, main

__all__ = ["COMMANDS", "main"]
