"""Reminders firing: due schedules become notifications (campaigns), and the
configured reminders are kept in step with their rows.

``fire_due`` is what the scheduler's job runs every second on the replica
holding the scheduler role; tests call it directly with a ``ManualClock``.
Each firing is one transaction of ``ScheduleStore.fire_next``; the campaign it
creates is written out (policy, quiet hours, consent, window) by the campaign
writer, woken through ``hub.campaigns_ready``.

A configured reminder without its own ``timezone`` fires in each contact's
zone: one row per zone its audience's contacts have (``config:<name>@<zone>``,
contacts without a zone counting in ``wahub.timezone``), each reaching only
the contacts of its zone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from wahub.core.hub import Hub
from wahub.core.outbound.cron import count_between, latest_at_or_before, next_after, parse
from wahub.core.storage.schedules import FIRED, SKIPPED, Firing, Missed, ScheduleSpec, SyncResult

_LOGGER = logging.getLogger(__name__)

#: Most firings one run handles; the next run, a second later, goes on.
MAX_FIRINGS_PER_RUN = 500


def following(schedule: Mapping[str, Any], after: float) -> float | None:
    """A schedule's next occurrence strictly after ``after``; None for a one-shot."""
    cron = schedule["cron"]
    if cron is None:
        return None
    return next_after(cron, after, ZoneInfo(schedule["timezone"] or "UTC"))


def catch_up(schedule: Mapping[str, Any], now: float) -> Missed:
    """A due schedule at ``now``: its latest occurrence due, and how many earlier
    due ones it supersedes (those more than ``misfire_grace`` late apart),
    found without walking every missed occurrence."""
    occurrence = float(schedule["next_fire_at"])
    if schedule["cron"] is None:
        return Missed(occurrence)
    cron, zone = parse(schedule["cron"]), ZoneInfo(schedule["timezone"] or "UTC")
    latest = latest_at_or_before(cron, now, zone, not_before=occurrence)
    if latest is None or latest <= occurrence:
        return Missed(occurrence)
    # Skipped: ``occurrence`` and those after it before ``latest``; superseded
    # those not more than the grace late (at or after ``now - grace``).
    skipped = count_between(cron, occurrence, latest, zone)
    within = max(occurrence, math.ceil(now - float(schedule["misfire_grace"])))
    superseded = count_between(cron, within - 1, latest, zone) - 1 if latest >= within else 0
    return Missed(latest, grace_passed=skipped - superseded, superseded=superseded)


async def fire_due(hub: Hub) -> list[Firing]:
    """Fire (or skip, when too late) every schedule due at ``hub.clock``'s time."""
    firings = []
    for _ in range(MAX_FIRINGS_PER_RUN):
        firing = await hub.storage.schedules.fire_next(
            hub.clock.time(), following, catch_up, default_zone=hub.config["wahub"].get("timezone", "UTC")
        )
        if firing is None:
            break
        _record(hub, firing)
        firings.append(firing)
    if any(firing.campaign_id is not None for firing in firings):
        hub.campaigns_ready.set()
    return firings


def _record(hub: Hub, firing: Firing) -> None:
    counter = hub.metrics.reminder_firings
    for reason, count in firing.skipped.items():
        counter.labels(SKIPPED, reason).inc(count)
        _LOGGER.warning(
            "reminder %s: %d firing(s) skipped (%s), the latest due %.0f s ago",
            firing.name,
            count,
            reason,
            firing.late,
        )
    if firing.outcome != SKIPPED:
        counter.labels(firing.outcome, "").inc()
        if firing.outcome == FIRED:
            _LOGGER.info("reminder %s fired: notification %s", firing.name, firing.campaign_id)
        else:
            _LOGGER.info("reminder %s fired %.0f s late: notification %s", firing.name, firing.late, firing.campaign_id)


async def sync_config_reminders(hub: Hub, reminders: Sequence[Mapping[str, Any]]) -> SyncResult:
    """Make the ``reminders:`` entries' rows match the configuration and the
    zones their contacts have now."""
    wanted: dict[str, ScheduleSpec] = {}
    for reminder in reminders:
        wanted.update(await _rows_of(hub, reminder))
    result = await hub.storage.schedules.sync_config(wanted, following, now=hub.clock.time())
    for verb, names in (("added", result.created), ("updated", result.updated), ("cancelled", result.cancelled)):
        if names:
            _LOGGER.info("reminders: %s %s", verb, ", ".join(names))
    return result


async def _rows_of(hub: Hub, reminder: Mapping[str, Any]) -> dict[str, ScheduleSpec]:
    """One configured reminder's rows: one, or one per zone of its contacts."""
    # The configuration's check made sure a named provider exists; none named: the first.
    provider = reminder["provider"] or hub.config["providers"][0]["name"]
    name, to = f"config:{reminder['name']}", reminder["to"]
    tags = to["tags"] if isinstance(to, Mapping) else None

    def spec(audience: Mapping[str, Any], zone: str) -> ScheduleSpec:
        return ScheduleSpec(
            provider=provider,
            audience=audience,
            misfire_grace=float(reminder["misfire_grace"]),
            template=reminder["template"],
            language=reminder["language"],
            parameters=reminder["parameters"],
            cron=reminder["cron"],
            timezone=zone,
        )

    zone = reminder["timezone"]
    if zone is not None:
        return {name: spec({"segment": {"tags": tags}} if tags is not None else {"to": list(to)}, zone)}
    default = hub.config["wahub"]["timezone"]
    if tags is not None:
        zones = {found or default for found in await hub.storage.schedules.audience_zones(provider, tags)}
        return {f"{name}@{zone}": spec({"segment": {"tags": tags, "timezone": zone}}, zone) for zone in sorted(zones)}
    by_zone: dict[str, list[str]] = {}
    for address, found in (await hub.storage.schedules.address_zones(provider, to)).items():
        by_zone.setdefault(found or default, []).append(address)
    return {f"{name}@{zone}": spec({"to": addresses}, zone) for zone, addresses in sorted(by_zone.items())}
