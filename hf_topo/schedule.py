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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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

    def describe(self) -> str:
        if not self.phases:
            return "constant"
        return " → ".join(
            f"{p.kind}({p.start:g}→{p.end:g}" + (f", {p.steps} steps)" if p.steps else ")") for p in self.phases
        )
