"""The ingest benchmark's numbers: one side's round, medians over rounds, and the printed report."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, dataclass

from bench.loadgen import LoadResult
from bench.server import Memory

RATIO_TARGET, RATIO_GOAL = 0.6, 0.8
P99_TARGET_MS = 25.0
RSS_TARGET_MB = 100.0
SIDES = {"baseline": "(a) aiohttp baseline", "wahub": "(b) wahub daemon"}


@dataclass
class Pipeline:
    """What wahub's inbox workers had left when the load stopped, and how long they took."""

    pending_at_end: int
    #: Still pending when the drain ended (0 when it drained within --drain-timeout).
    left_after_drain: int
    drain_seconds: float
    #: Events processed per second while draining, and the server CPU each took.
    events_per_second: float
    cpu_us_per_event: float
    #: Server CPU over the measured window and the drain, per measured request.
    cpu_us_per_request: float
    replies_sent: int

    @property
    def drained(self) -> bool:
        return self.left_after_drain == 0


@dataclass
class SideResult:
    """One server's numbers over one round's measured window."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    memory: Memory
    load: LoadResult
    warmup: LoadResult
    inbox_rows: int | None = None
    pipeline: Pipeline | None = None


@dataclass
class Median:
    """A side's medians over its rounds (what the table shows)."""

    rounds: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    rss_mb: float
    hwm_mb: float
    non_2xx: int
    socket_errors: int

    @classmethod
    def of(cls, rounds: list[SideResult]) -> Median:
        def median(values: list[float]) -> float:
            return float(statistics.median(values))

        return cls(
            rounds=len(rounds),
            requests_per_second=median([r.requests_per_second for r in rounds]),
            p50_ms=median([r.p50_ms for r in rounds]),
            p99_ms=median([r.p99_ms for r in rounds]),
            cpu_us_per_request=median([r.cpu_us_per_request for r in rounds]),
            rss_mb=median([r.memory.rss_mb for r in rounds]),
            hwm_mb=max(r.memory.hwm_mb for r in rounds),
            non_2xx=sum(r.load.non_2xx for r in rounds),
            socket_errors=sum(r.load.socket_errors for r in rounds),
        )


@dataclass
class Target:
    """One pass/fail line under the table."""

    name: str
    value: float
    limit: float
    passed: bool


def paired_ratios(results: dict[str, list[SideResult]]) -> list[float]:
    """wahub's req/s over the baseline's, per round both sides completed."""
    pairs = zip(results.get("baseline", []), results.get("wahub", []), strict=False)
    return [w.requests_per_second / b.requests_per_second for b, w in pairs if b.requests_per_second]


def evaluate_targets(results: dict[str, list[SideResult]]) -> list[Target]:
    targets = []
    ratios = paired_ratios(results)
    if ratios:
        ratio = float(statistics.median(ratios))
        targets.append(Target("req/s ratio b/a >=", ratio, RATIO_TARGET, ratio >= RATIO_TARGET))
    if results.get("wahub"):
        wahub = Median.of(results["wahub"])
        targets.append(Target("p99 ms <", wahub.p99_ms, P99_TARGET_MS, wahub.p99_ms < P99_TARGET_MS))
        targets.append(Target("peak RSS MB <=", wahub.hwm_mb, RSS_TARGET_MB, wahub.hwm_mb <= RSS_TARGET_MB))
    return targets


def print_table(args: argparse.Namespace, results: dict[str, list[SideResult]]) -> None:
    threads = f" ({args.threads} threads)" if args.loadgen == "wrk" else " (client-bound)"
    print(
        f"\nwebhook ingest: POST /webhooks/main (Cloud API, 1 message : 3 statuses), {args.connections} "
        f"connections, {args.rounds} x {args.duration} s (+{args.warmup} s warm-up) per side, "
        f"load from {args.loadgen}{threads}"
    )
    print(args.cpu_note)
    columns = ("req/s", "p50 ms", "p99 ms", "CPU us/req", "RSS MB", "HWM MB", "non-2xx", "sock err")
    header = f"{'side (median)':<22}" + "".join(f"{column:>11}" for column in columns)
    print(header)
    print("-" * len(header))
    for side in args.sides:
        if not results.get(side):
            print(f"{SIDES[side]:<22}{'ERROR (see below)':>22}")
            continue
        m = Median.of(results[side])
        cells = (
            f"{m.requests_per_second:.0f}",
            f"{m.p50_ms:.2f}",
            f"{m.p99_ms:.2f}",
            f"{m.cpu_us_per_request:.0f}",
            f"{m.rss_mb:.1f}",
            f"{m.hwm_mb:.1f}",
            str(m.non_2xx),
            str(m.socket_errors),
        )
        print(f"{SIDES[side]:<22}" + "".join(f"{cell:>11}" for cell in cells))
    for r in results.get("wahub", []):
        if r.load.repeats or r.warmup.repeats:
            print(
                f"warning: wahub used up its pre-signed requests and got {r.load.repeats + r.warmup.repeats} "
                f"repeats; it dedupes them, which flatters its numbers: raise --max-rate (now {args.max_rate})"
            )
            break


def print_pipeline(args: argparse.Namespace, rounds: list[SideResult]) -> dict[str, object] | None:
    """Whether processing kept up with intake: inbox rows left at the end, time to drain them."""
    pipelines = [r.pipeline for r in rounds if r.pipeline is not None]
    if not pipelines:
        return None

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    facts = {
        "pending_at_end": median([p.pending_at_end for p in pipelines]),
        "left_after_drain": median([p.left_after_drain for p in pipelines]),
        "drain_seconds": median([p.drain_seconds for p in pipelines]),
        "events_per_second": median([p.events_per_second for p in pipelines]),
        "cpu_us_per_event": median([p.cpu_us_per_event for p in pipelines]),
        "cpu_us_per_request": median([p.cpu_us_per_request for p in pipelines]),
        "replies_sent": median([p.replies_sent for p in pipelines]),
    }
    print(f"\npipeline of wahub (median of {len(pipelines)} rounds):")
    print(f"  inbox events pending when the load stopped: {facts['pending_at_end']:.0f}")
    if all(p.drained for p in pipelines):
        print(f"  drained in {facts['drain_seconds']:.1f} s", end="")
    else:
        print(
            f"  NOT drained within --drain-timeout {args.drain_timeout:g} s: "
            f"{facts['left_after_drain']:.0f} still pending",
            end="",
        )
    print(
        f", processing {facts['events_per_second']:.0f} events/s at {facts['cpu_us_per_event']:.0f} CPU us each"
        f"\n  CPU us per request, window and drain: {facts['cpu_us_per_request']:.0f}"
        f"\n  replies sent to the fake Graph API: {facts['replies_sent']:.0f}"
    )
    kept_up = facts["pending_at_end"] == 0
    print("  processing kept up with intake" if kept_up else "  processing did NOT keep up with intake at this load")
    return facts | {"kept_up": kept_up, "rounds": [asdict(p) | {"drained": p.drained} for p in pipelines]}


def target_line(target: Target) -> str:
    return f"  {target.name} {target.limit:g}: {target.value:.2f} {'PASS' if target.passed else 'FAIL'}"


def print_targets(targets: list[Target]) -> None:
    if not targets:
        return
    print("targets for wahub:")
    for target in targets:
        line = target_line(target)
        if target.name.startswith("req/s ratio"):
            goal = "met" if target.value >= RATIO_GOAL else "not met"
            line += f" (goal {RATIO_GOAL:g} {goal})"
        print(line)


def check_inbox(rounds: list[SideResult], errors: list[str]) -> dict[str, object]:
    """Every request wahub answered 2xx (warm-up included) must have its inbox row, each round."""
    accepted = sum(r.warmup.ok + r.load.ok for r in rounds)
    expected = accepted - sum(r.warmup.repeats + r.load.repeats for r in rounds)
    rows = sum(r.inbox_rows or 0 for r in rounds)
    stored = all((r.inbox_rows or 0) >= r.warmup.ok + r.load.ok - r.warmup.repeats - r.load.repeats for r in rounds)
    print(f"\ninbox: {rows} rows for {accepted} 2xx responses (warm-up included, all rounds)", end="")
    if expected != accepted:
        print(f", {expected} of them unique", end="")
    if stored:
        print(": every accepted webhook is stored")
    else:
        print(": ROWS MISSING")
        errors.append("wahub answered 2xx to webhooks missing from its inbox table")
    return {"rows": rows, "accepted": accepted, "expected": expected, "all_stored": stored}


def report(args: argparse.Namespace, results: dict[str, list[SideResult]], errors: list[str]) -> dict[str, object]:
    """Print the table, pipeline, targets and inbox check; return the same facts for --json."""
    print_table(args, results)
    targets = evaluate_targets(results)
    facts: dict[str, object] = {
        "settings": {key: getattr(args, key) for key in ("connections", "duration", "warmup", "rounds", "threads")}
        | {"loadgen": args.loadgen, "max_rate": args.max_rate, "cpus": args.cpu_note},
        "sides": {side: [asdict(r) for r in rounds] for side, rounds in results.items()},
        "medians": {side: asdict(Median.of(rounds)) for side, rounds in results.items() if rounds},
        "targets": [asdict(target) for target in targets],
        "errors": errors,
    }
    ratios = paired_ratios(results)
    if ratios:
        print(f"\nratio b/a of req/s (median of {len(ratios)} rounds): {statistics.median(ratios):.2f}")
        facts["ratio"] = float(statistics.median(ratios))
        facts["ratios"] = ratios
    if results.get("wahub"):
        facts["pipeline"] = print_pipeline(args, results["wahub"])
    print_targets(targets)
    if results.get("wahub"):
        facts["inbox"] = check_inbox(results["wahub"], errors)
    for error in errors:
        print(f"\nERROR: {error}")
    return facts
