"""Errors that name the parameter to change: ``tokenizer_name=`` to a Python caller, ``--tokenizer_name`` on the
command line.

The library's functions and argument dataclasses are called from Python and, through ``hf-topo``, from the command
line, where each parameter is a flag of the same name. A message names a parameter with :func:`parameter` and is
raised as :class:`InputError` (a ``ValueError``) or :class:`MissingFileError` (a ``FileNotFoundError``)::

    raise InputError(f"{parameter('max_steps', max_steps)} must be at least 1.")

``str(err)`` reads ``max_steps=0 must be at least 1.``; the ``hf-topo`` commands print
:func:`command_line_message`, ``--max_steps 0 must be at least 1.``. :attr:`InputError.parameters` lists the
parameters a message names, in order.
"""

from __future__ import annotations

import re

__all__ = ["InputError", "MissingFileError", "command_line_message", "parameter"]

# A parameter in a message: START name [VALUE_SEPARATOR value] END (control characters no message text contains).
_START, _VALUE, _END = "\x02", "\x1f", "\x03"
_MARKED = re.compile(f"{_START}([A-Za-z_][A-Za-z0-9_]*)(?:{_VALUE}(.*?))?{_END}", re.DOTALL)
_NO_VALUE = object()


def parameter(name: str, value: object = _NO_VALUE) -> str:
    """A parameter (and, given, the value it was given) as an error message names it.

    Rendered ``name=`` / ``name=<value>`` (``value`` as given to this function, so pass ``repr`` yourself where a
    string should be quoted) by ``str()`` of :class:`InputError` and :class:`MissingFileError`, and ``--name`` /
    ``--name <value>`` by :func:`command_line_message`.

    Args:
        name: the Python parameter (or dataclass field), which is also the flag's name without ``--``.
        value: the value to show next to it.
    """
    if not name.isidentifier():
        raise ValueError(f"parameter(name={name!r}): expected a Python identifier such as 'tokenizer_name'.")
    return f"{_START}{name}{_END}" if value is _NO_VALUE else f"{_START}{name}{_VALUE}{value}{_END}"


def _render(message: str, command_line: bool) -> str:
    def one(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if command_line:
            return f"--{name}" if value is None else f"--{name} {value}"
        return f"{name}=" if value is None else f"{name}={value}"

    return _MARKED.sub(one, message)


def _message(err: BaseException) -> str:
    return err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else ""


class _NamesParameters:
    """What :class:`InputError` and :class:`MissingFileError` share: the message rendered for Python callers."""

    args: tuple

    def __str__(self) -> str:
        message = _message(self)  # type: ignore[arg-type]
        return _render(message, command_line=False) if message else super().__str__()

    @property
    def parameters(self) -> list[str]:
        """The parameters the message names, in order (each once)."""
        return list(dict.fromkeys(m.group(1) for m in _MARKED.finditer(_message(self))))  # type: ignore[arg-type]


class InputError(_NamesParameters, ValueError):
    """A refused input (a ``ValueError``) whose message names the parameters to change (see :func:`parameter`)."""


class MissingFileError(_NamesParameters, FileNotFoundError):
    """A file or folder given as a parameter does not exist (a ``FileNotFoundError`` naming the parameter)."""


def command_line_message(err: BaseException) -> str:
    """The message of ``err`` as the ``hf-topo`` commands print it: every parameter worded as its flag
    (``--tokenizer_name``); any other exception's message as ``str()`` gives it."""
    message = _message(err)
    return _render(message, command_line=True) if isinstance(err, _NamesParameters) and message else str(err)
