"""``python -m hf_topo.cli COMMAND ...`` is the ``hf-topo`` command (also under ``accelerate launch -m hf_topo.cli``)."""

import sys

from hf_topo.cli import main

sys.exit(main())
