"""Cron schedules in an IANA zone: validation, fire times in UTC, and the DST rules we adopt.

The one cron implementation of contentpipe: the scheduler computes fire times with it and pipelines validate a
`schedule_pipeline` step's expression with it, so an expression a pipeline accepts is one the scheduler accepts.

Rules:
- five fields only, one-minute resolution; the zone is its own field (`CRON_TZ=`/`TZ=` prefixes refused);
- a local time that does not exist (spring forward) fires once, at the first valid instant after the gap;
- a local time that happens twice (fall back) fires once, at its first occurrence, for fixed-time expressions;
  expressions with `*` or a step in the hour field keep their real elapsed cadence through the repeated hour.

croniter iterates *wall-clock* (naive) matches; every match is then resolved to zero, one or two instants.
The fold=0 resolution is monotone in wall-clock time, so the next instant after `t` is the first match whose
resolution lies after `t`, except for the second pass through a repeated hour, handled explicitly.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from contentpipe.common.errors import FieldViolation, InvalidArgument
from contentpipe.common.timezones import find_time_zone
from croniter import (  # type: ignore[import-untyped]  # croniter ships no type information
    CroniterBadCronError,
    CroniterBadDateError,
    CroniterError,
    croniter,
)

# Offsets change by at most a few hours at a transition; transitions are searched within this span.
_MAX_SHIFT = timedelta(hours=3)
_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")
_TZ_PREFIX = re.compile(r"^\s*(CRON_TZ|TZ)\s*=", re.IGNORECASE)
# A schedule that has no match in this many years is refused as never firing (29 Feb still matches).
_MAX_YEARS_BETWEEN_MATCHES = 9
_PERIOD_SAMPLES = 64
_MEMO_SIZE = 512


@dataclass(frozen=True, slots=True)
class FireTime:
    """One fire time: the UTC instant, the same instant in the schedule's zone, and DST flags."""

    time: datetime
    local_time: datetime
    in_dst_gap: bool = False
    in_dst_overlap: bool = False


def validate_time_zone(name: str, *, field: str = "cron.time_zone") -> ZoneInfo:
    """The zone for an IANA name (empty → UTC); InvalidArgument naming `field` otherwise."""
    if not name:
        return ZoneInfo("UTC")
    if name != name.strip() or ".." in name or name.startswith("/"):
        raise InvalidArgument.single(field, f"unknown time zone {name!r}; use an IANA name like Europe/Berlin")
    zone = find_time_zone(name)
    if zone is None:
        raise InvalidArgument.single(
            field, f"unknown time zone {name!r}; use an IANA name like Europe/Berlin", reason="UNKNOWN_TIME_ZONE"
        )
    return zone


def _expression_problem(expression: str) -> str | None:
    if not expression.strip():
        return "required: a five-field cron expression such as '*/15 * * * *'"
    if _TZ_PREFIX.match(expression):
        return "CRON_TZ=/TZ= prefixes are not accepted; put the zone in cron.time_zone"
    if expression.strip().startswith("@"):
        return "macros like @daily are not accepted; write the five fields (e.g. '0 0 * * *')"
    fields = expression.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for field in fields:
        if not _FIELD.match(field) or field.upper() in {"H", "R"} or "H(" in field.upper():
            return f"field {field!r} is not valid cron syntax"
    if not croniter.is_valid(expression):
        return "not a valid cron expression (check ranges: minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7)"
    return None


class CronSchedule:
    """A validated cron expression in a zone; computes fire times. Cheap to reuse, not thread-safe."""

    def __init__(self, expression: str, time_zone: str = "", *, field_prefix: str = "cron") -> None:
        problem = _expression_problem(expression)
        if problem is not None:
            raise InvalidArgument(
                f"{field_prefix}.expression: {problem}",
                [FieldViolation(f"{field_prefix}.expression", problem)],
                reason="INVALID_CRON_EXPRESSION",
            )
        self.expression = " ".join(expression.split())
        self.time_zone = time_zone or "UTC"
        self.zone = validate_time_zone(time_zone, field=f"{field_prefix}.time_zone")
        hour_field = self.expression.split()[1]
        # Debian cron's convention: a wildcard or a step in the hour field means "keep real cadence".
        self.stepped = "*" in hour_field or "/" in hour_field
        self._memo: dict[datetime, FireTime] = {}
        self._iter = croniter(
            self.expression,
            datetime(2000, 1, 1),
            day_or=True,
            max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES,
        )
        try:
            self._iter.get_next(datetime)
        except CroniterBadDateError:
            reason = "the expression can never fire (no calendar date matches it, e.g. 31 February)"
            raise InvalidArgument(
                f"{field_prefix}.expression: {reason}",
                [FieldViolation(f"{field_prefix}.expression", reason)],
                reason="CRON_NEVER_FIRES",
            ) from None
        except CroniterError as exc:  # pragma: no cover - is_valid already checked the syntax
            raise InvalidArgument.single(f"{field_prefix}.expression", str(exc)) from None

    # ------------------------------------------------------------ wall-clock matches and their instants

    def _naive_next(self, naive: datetime) -> datetime:
        self._iter.set_current(naive, force=True)
        try:
            value: datetime = self._iter.get_next(datetime)
        except (CroniterBadDateError, CroniterBadCronError):  # pragma: no cover - validated at construction
            raise InvalidArgument.single("cron.expression", "the expression can never fire") from None
        return value

    def _offset(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self.zone).utcoffset()
        assert offset is not None
        return offset

    def _transition_between(self, before: datetime, after: datetime) -> datetime:
        """The first instant in (before, after] whose offset differs from `before`'s (bisection, 1 s)."""
        start_offset = self._offset(before)
        low, high = before, after
        while high - low > timedelta(seconds=1):
            mid = low + (high - low) / 2
            if self._offset(mid) == start_offset:
                low = mid
            else:
                high = mid
        return high.replace(microsecond=0)

    def _fire(self, instant: datetime, *, gap: bool = False, overlap: bool = False) -> FireTime:
        return FireTime(instant, instant.astimezone(self.zone), gap, overlap)

    def _resolve(self, naive: datetime) -> list[FireTime]:
        """The instants a wall-clock match stands for (ascending)."""
        first = naive.replace(tzinfo=self.zone, fold=0)
        second = naive.replace(tzinfo=self.zone, fold=1)
        offset0, offset1 = first.utcoffset(), second.utcoffset()
        assert offset0 is not None and offset1 is not None
        utc0 = (naive - offset0).replace(tzinfo=UTC)
        if offset0 == offset1:
            return [self._fire(utc0)]
        utc1 = (naive - offset1).replace(tzinfo=UTC)
        if offset0 < offset1:
            # Gap: the wall clock jumped over `naive`; fire at the instant the jump happened.
            return [self._fire(self._transition_between(utc1, utc0), gap=True)]
        # Overlap: `naive` happens at utc0 (first pass) and utc1 (second pass).
        if self.stepped:
            return [self._fire(utc0, overlap=True), self._fire(utc1, overlap=True)]
        return [self._fire(utc0, overlap=True)]

    def next_after(self, after: datetime) -> FireTime:
        """The first fire time strictly after `after` (aware).

        Memoised: many jobs share an expression and a fire time, and croniter is the costliest step of planning.
        """
        after = after.astimezone(UTC)
        cached = self._memo.get(after)
        if cached is not None:
            return cached
        fire = self._compute_next_after(after)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.pop(next(iter(self._memo)))
        self._memo[after] = fire
        return fire

    def _compute_next_after(self, after: datetime) -> FireTime:
        local = after.astimezone(self.zone)
        naive = local.replace(tzinfo=None, fold=0)
        best: FireTime | None = None
        candidate = naive
        # Bounded: at most a repeated window's worth of matches resolve before `after`.
        for _ in range(10_000):
            candidate = self._naive_next(candidate)
            later = [fire for fire in self._resolve(candidate) if fire.time > after]
            if later:
                best = later[0]
                break
        assert best is not None
        if self.stepped and local.fold == 0:
            second_pass = self._second_pass_candidate(after, naive)
            if second_pass is not None and second_pass.time < best.time:
                best = second_pass
        return best

    def _second_pass_candidate(self, after: datetime, naive: datetime) -> FireTime | None:
        """During the first pass through a repeated hour, the earliest match of the second pass."""
        offset_now = self._offset(after)
        horizon = after + _MAX_SHIFT
        if self._offset(horizon) >= offset_now:
            return None
        transition = self._transition_between(after, horizon)
        offset_after = self._offset(transition)
        window_start = (transition + offset_after).replace(tzinfo=None)
        window_end = window_start + (offset_now - offset_after)
        if not window_start <= naive < window_end:
            return None
        match = self._naive_next(window_start - timedelta(seconds=1))
        if match >= window_end:
            return None
        instants = self._resolve(match)
        return instants[-1] if instants[-1].time > after else None

    def fire_times(self, after: datetime, count: int) -> list[FireTime]:
        """The next `count` fire times after `after`, ascending."""
        times: list[FireTime] = []
        cursor = after
        for _ in range(count):
            fire = self.next_after(cursor)
            times.append(fire)
            cursor = fire.time
        return times

    def times_between(self, first: datetime, until: datetime, *, limit: int) -> tuple[list[datetime], bool]:
        """Fire instants in [first, until], `first` included; at most `limit` (and whether more were cut)."""
        times, truncated, _ = self.times_until(first, until, limit=limit)
        return times, truncated

    def times_until(
        self, first: datetime, until: datetime, *, limit: int
    ) -> tuple[list[datetime], bool, datetime | None]:
        """Like `times_between`, plus the first fire time after `until` when it was found on the way."""
        times: list[datetime] = []
        cursor = first
        if cursor > until:
            return times, False, first
        times.append(cursor)
        while True:
            fire = self.next_after(cursor).time
            if fire > until:
                return times, False, fire
            if len(times) >= limit:
                return times, True, None
            times.append(fire)
            cursor = fire

    def period(self, reference: datetime) -> timedelta:
        """The shortest interval between consecutive fire times (sampled from `reference`)."""
        fires = self.fire_times(reference, _PERIOD_SAMPLES)
        gaps = [b.time - a.time for a, b in itertools.pairwise(fires)]
        return min(gaps) if gaps else timedelta(days=366)


def cron_violations(field_prefix: str, expression: str, time_zone: str) -> list[FieldViolation]:
    """What is wrong with an expression and its zone, as field violations under `field_prefix` (empty: valid)."""
    violations: list[FieldViolation] = []
    try:
        CronSchedule(expression, "", field_prefix=field_prefix)  # whether it fires does not depend on the zone
    except InvalidArgument as exc:
        violations.extend(exc.violations)
    try:
        validate_time_zone(time_zone, field=f"{field_prefix}.time_zone")
    except InvalidArgument as exc:
        violations.extend(exc.violations)
    return violations


@lru_cache(maxsize=4096)
def cron_schedule(expression: str, time_zone: str) -> CronSchedule:
    """A shared, validated schedule per (expression, zone); callers on one event loop may reuse it."""
    return CronSchedule(expression, time_zone)
