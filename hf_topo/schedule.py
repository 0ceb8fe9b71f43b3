"""τ schedules: how the weight of TopoLoss changes over optimizer steps.

A schedule is a chain of phases, each a multiplier of the base ``tau`` that runs for a number of optimizer
steps; after the last phase the final multiplier holds. Because the value is a pure function of the optimizer
step, ``resume_from_checkpoint`` (which restores ``state.global_step``) resumes the schedule exactly.

Phases, as written on the command line (comma-separated, chained in order)::

    constant[:STEPS]              hold the current multiplier (1.0 at the start)
    warmup:STEPS                  linear ramp 0 → 1
    linear:STEPS:START:END        linear ramp START → END
    cosine:STEPS[:END]            half-cosine from the current multiplier to END (default 0)

For example ``"warmup:1000,constant:4000,cosine:5000:0.1"``: ramp τ up over 1000 steps, hold it for 4000,
decay it to 0.1·τ over the next 5000 and keep it there.

**The authors' ``topoloss`` schedulers.** ``topoloss``'s main branch (not its PyPI 0.0.2) has ``TauScheduler``
(one ``"linear"`` or ``"cosine_decay"`` ramp of the absolute τ from ``start_value`` to ``end_value`` over
``num_steps``) and ``ChainedTauScheduler`` (ramps run one after the other, the last value held), saved as JSON: an
object ``{"start_value", "end_value", "num_steps", "mode"}`` or a list of them. :meth:`TauSchedule.to_topoloss` /
:meth:`TauSchedule.save_topoloss_json` write that format (always the chained list) and
:meth:`TauSchedule.from_topoloss` / :meth:`TauSchedule.from_topoloss_json` read it, given the base τ (their values
are τ itself, ours multipliers of it). Their τ after ``k`` calls of ``step()`` (``get_current_tau()``) is our τ at
optimizer step ``k``. A linear phase is a ``"linear"`` ramp, a constant phase a flat ``"linear"`` one, a decaying
cosine a ``"cosine_decay"``; what has no counterpart is refused with the reason: a rising or flat cosine phase
(``cosine_decay`` only decays), and a single ``"cosine_decay"`` ``TauScheduler``, whose cosine keeps running after
``num_steps`` where ours (and their chained scheduler) holds ``end_value``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TauPhase", "TauSchedule"]

_KINDS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TauPhase:
    """One phase: ``kind`` in ``{"constant", "linear", "cosine"}``, its length in optimizer steps (``None``: open
    ended, only for the last phase) and the multiplier at its start and end."""

    kind: str
    steps: int | None
    start: float
    end: float

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Unknown τ phase kind {self.kind!r}; expected one of {_KINDS}.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"A τ phase needs steps >= 1 (got {self.steps}); drop the phase instead.")
        for name, value in (("start", self.start), ("end", self.end)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"τ phase {name} multiplier must be a finite number >= 0, got {value}.")

    def value(self, step_in_phase: int) -> float:
        if self.kind == "constant" or not self.steps:
            return self.start if self.kind == "constant" else self.end
        progress = min(max(step_in_phase / self.steps, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "steps": self.steps, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class TauSchedule:
    """A chain of :class:`TauPhase`; ``multiplier(step)`` is the factor applied to the base τ at ``step``.

    An empty schedule is the constant schedule (multiplier 1 everywhere).
    """

    phases: tuple[TauPhase, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "phases", tuple(self.phases))
        for phase in self.phases[:-1]:
            if phase.steps is None:
                raise ValueError("Only the last τ phase may be open ended (steps=None); give the others a length.")

    @classmethod
    def parse(cls, spec: str | None) -> TauSchedule:
        """Build a schedule from its command-line form (see the module docstring)."""
        if spec is None or not spec.strip() or spec.strip() == "constant":
            return cls()
        phases: list[TauPhase] = []
        current = 1.0
        for raw in spec.split(","):
            parts = [p.strip() for p in raw.strip().split(":")]
            kind, args = parts[0], parts[1:]
            try:
                if kind == "constant" and len(args) <= 1:
                    steps = int(args[0]) if args else None
                    phase = TauPhase("constant", steps, current, current)
                elif kind == "warmup" and len(args) == 1:
                    phase = TauPhase("linear", int(args[0]), 0.0, 1.0)
                elif kind == "linear" and len(args) == 3:
                    phase = TauPhase("linear", int(args[0]), float(args[1]), float(args[2]))
                elif kind == "cosine" and len(args) in (1, 2):
                    phase = TauPhase("cosine", int(args[0]), current, float(args[1]) if len(args) == 2 else 0.0)
                else:
                    raise ValueError("wrong number of fields")
            except ValueError as err:
                raise ValueError(
                    f"Cannot read τ schedule phase {raw.strip()!r} ({err}). Expected comma-separated phases among "
                    "'constant[:STEPS]', 'warmup:STEPS', 'linear:STEPS:START:END', 'cosine:STEPS[:END]', "
                    "e.g. 'warmup:1000,cosine:9000:0.1'."
                ) from None
            phases.append(phase)
            current = phase.end
        return cls(tuple(phases))

    def multiplier(self, step: int) -> float:
        """Multiplier of the base τ at optimizer step ``step`` (0-based: the step being computed)."""
        value = 1.0
        remaining = int(step)
        for phase in self.phases:
            if phase.steps is None or remaining < phase.steps:
                return phase.value(remaining)
            remaining -= phase.steps
            value = phase.end
        return value

    def to_list(self) -> list[dict]:
        return [phase.to_dict() for phase in self.phases]

    @classmethod
    def from_list(cls, data: list[dict] | None) -> TauSchedule:
        return cls(tuple(TauPhase(**item) for item in (data or [])))

    # ---- the topoloss scheduler JSON ------------------------------------------------------------------------------

    def to_topoloss(self, tau: float = 1.0) -> list[dict[str, Any]]:
        """This schedule at base τ ``tau`` as ``topoloss``'s ``ChainedTauScheduler`` JSON (a list of ramps of the
        absolute τ; see the module docstring).

        Raises:
            ValueError: a phase has no counterpart there (a cosine phase that does not decay, a constant phase whose
                start and end differ).
        """
        if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise ValueError(f"tau={tau!r} must be a finite number >= 0 (the base τ the multipliers scale).")
        entries = []
        for index, phase in enumerate(self.phases or (TauPhase("constant", None, 1.0, 1.0),)):
            if phase.kind == "constant" and phase.start != phase.end:
                raise ValueError(
                    f"τ phase {index} is constant at {phase.start:g} but ends at {phase.end:g}: topoloss's schedulers "
                    "hold the value a ramp ends at, so the jump cannot be written. Make start equal end."
                )
            if phase.kind == "cosine" and phase.steps is not None and not phase.end < phase.start:
                raise ValueError(
                    f"τ phase {index} is a cosine from {phase.start:g} to {phase.end:g}: topoloss's 'cosine_decay' "
                    "only decays (end_value < start_value), so a rising or flat cosine has no counterpart there. Use "
                    "a linear phase, or keep the schedule in hf_topo's own format (TauSchedule.to_list)."
                )
            if phase.steps is None:  # open ended: its value from the start on, held (a one-step flat ramp)
                value = phase.start if phase.kind == "constant" else phase.end
                start, end, steps, mode = value, value, 1, "linear"
            else:
                mode = "cosine_decay" if phase.kind == "cosine" else "linear"
                start, end, steps = phase.start, phase.end, phase.steps
            entries.append({"start_value": tau * start, "end_value": tau * end, "num_steps": steps, "mode": mode})
        return entries

    @classmethod
    def from_topoloss(cls, data: list[dict[str, Any]] | dict[str, Any], tau: float = 1.0) -> TauSchedule:
        """The schedule of ``topoloss``'s scheduler JSON (a ``ChainedTauScheduler`` list or one ``TauScheduler``
        object) as multipliers of the base τ ``tau`` (``TopoConfig(tau=tau, tau_schedule=...)`` then gives the same τ
        at every step).

        Raises:
            ValueError: the data is not that format, or it describes a schedule hf_topo cannot express (a single
                ``cosine_decay`` scheduler, whose cosine keeps running after ``num_steps``), or ``tau`` is not > 0.
        """
        if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau={tau!r} must be a finite number > 0: the τ values are read as multiples of it.")
        single = isinstance(data, dict)
        entries = [data] if single else data
        if not isinstance(entries, list) or not entries:
            raise ValueError(
                "A topoloss scheduler JSON is an object {'start_value', 'end_value', 'num_steps', 'mode'} "
                f"(TauScheduler) or a non-empty list of them (ChainedTauScheduler); got {type(data).__name__}."
            )
        keys = {"start_value", "end_value", "num_steps", "mode"}
        phases = []
        for index, entry in enumerate(entries):
            where = "the scheduler" if single else f"scheduler {index}"
            if not isinstance(entry, dict) or set(entry) != keys:
                found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(
                    f"{where} of the topoloss JSON has {found}; expected exactly the keys {sorted(keys)}."
                )
            steps, mode = entry["num_steps"], entry["mode"]
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(
                    f"{where} has num_steps={steps!r}; hf_topo needs an integer >= 1 (a ramp of 0 steps is skipped "
                    "by topoloss's ChainedTauScheduler: drop it)."
                )
            start, end = entry["start_value"] / tau, entry["end_value"] / tau
            if mode == "linear":
                kind = "constant" if start == end else "linear"
            elif mode == "cosine_decay":
                if not end < start:
                    raise ValueError(
                        f"{where} is a cosine_decay from {entry['start_value']} to {entry['end_value']}, which "
                        "topoloss refuses (it needs end_value < start_value)."
                    )
                if single:
                    raise ValueError(
                        "A single topoloss TauScheduler in 'cosine_decay' mode keeps following the cosine after "
                        "num_steps (back up to start_value at 2·num_steps); hf_topo holds end_value once a schedule "
                        "ends, as topoloss's ChainedTauScheduler does. Save it as a one-element ChainedTauScheduler "
                        "list ([{...}]) to get the held end value."
                    )
                kind = "cosine"
            else:
                raise ValueError(f"{where} has mode={mode!r}; topoloss's modes are 'linear' and 'cosine_decay'.")
            phases.append(TauPhase(kind, steps, float(start), float(end)))
        return cls(tuple(phases))

    def save_topoloss_json(self, path: str | os.PathLike, tau: float = 1.0) -> None:
        """Write :meth:`to_topoloss` to ``path`` (``ChainedTauScheduler.from_json`` of ``topoloss`` reads it)."""
        with open(path, "w") as f:
            json.dump(self.to_topoloss(tau), f, indent=4)

    @classmethod
    def from_topoloss_json(cls, path: str | os.PathLike, tau: float = 1.0) -> TauSchedule:
        """Read a JSON file saved by ``topoloss``'s ``TauScheduler.save_json`` or ``ChainedTauScheduler.save_json``
        (see :meth:`from_topoloss`)."""
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{os.fspath(path)!r} is not JSON ({err}); expected a topoloss scheduler file."
                ) from None
        return cls.from_topoloss(data, tau)

    def describe(self) -> str:
        if not self.phases:
            return "constant"
        return " → ".join(
            f"{p.kind}({p.start:g}→{p.end:g}" + (f", {p.steps} steps)" if p.steps else ")") for p in self.phases
        )
