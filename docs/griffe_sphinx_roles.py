"""A griffe extension for the API reference: Sphinx cross-reference roles in hf_topo's docstrings become code spans.

hf_topo's docstrings are Google style but name other objects the Sphinx way (``:class:`TopoConfig```,
``:func:`~hf_topo.resolve_checkpoint```); Markdown would show the role as text. This drops the role and the ``~``,
leaving the code span. It changes only the rendered documentation, never the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
