"""Faults a fake API injects when a test asks: the next requests (or the next
ones of one call) answered with an error status, optionally after doing
the work (a lost answer), or held until the fake closes (a hang)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fault:
    """One injected answer: ``status`` (with ``Retry-After`` when ``retry_after``
    is set), after carrying the request out when ``applied``, after holding
    it until the fake closes when ``hang``; only for requests whose
    ``"METHOD /path"`` starts with ``match``, when given."""

    status: int
    retry_after: float | None = None
    applied: bool = False
    hang: bool = False
    match: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else {}


@dataclass
class Faults:
    """The faults waiting, oldest first."""

    waiting: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault, times: int = 1) -> None:
        self.waiting.extend([fault] * times)

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault for this request, removed from those waiting."""
        call = f"{method} {path}"
        for index, fault in enumerate(self.waiting):
            if fault.match is None or call.startswith(fault.match):
                return self.waiting.pop(index)
        return None


class InjectsFaults:
    """``fail_next`` for a fake whose requests take their faults from ``_faults``."""

    _faults: Faults

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        *,
        applied: bool = False,
        match: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (those whose ``"METHOD /path"``
        starts with ``match``, if given) with ``status`` (and ``Retry-After``
        when given); with ``applied`` each is carried out first, its answer lost."""
        self._faults.add(Fault(status, retry_after, applied, match=match), times)
