"""Health: run the checks (pg.monitor, domain.integrity) concurrently, each bounded by its
own statement timeout, and judge their numbers against thresholds into OK / WARN / CRIT.

Thresholds have defaults on each check; `$SMARTSTART_HOME/health.toml` overrides them:

    timeout = 2.0            # seconds, per check
    [long_running_queries]
    warn = 30
    crit = 120
"""

from __future__ import annotations

import math
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path

import psycopg

from smartstart.config import Settings
from smartstart.domain import integrity, statshistory
from smartstart.errors import SmartStartError
from smartstart.pg import archive, monitor
from smartstart.pg.checks import Check, Detail, Measurement

CHECKS: tuple[Check, ...] = monitor.CHECKS + archive.CHECKS + integrity.CHECKS + statshistory.CHECKS
DEFAULT_TIMEOUT = 2.0
CONFIG_NAME = "health.toml"


class State(IntEnum):
    """A verdict; the order is the severity, and the exit status is derived from it."""

    OK = 0
    WARN = 1
    ERROR = 2  # the check failed: it could not tell
    TIMEOUT = 3  # the check ran past its statement timeout: it could not tell
    CRIT = 4

    @property
    def exit_code(self) -> int:
        # A check that could not tell is no proof of an emergency: it counts as WARN.
        return {State.OK: 0, State.WARN: 1, State.ERROR: 1, State.TIMEOUT: 1, State.CRIT: 2}[self]


@dataclass(frozen=True)
class Thresholds:
    warn: float | None
    crit: float | None
    floor: float | None = None


@dataclass(frozen=True)
class CheckResult:
    """One check's numbers and its verdict: what every face (CLI, API, metrics) renders."""

    name: str
    title: str
    state: State
    metric: float | None
    unit: str
    warn: float | None
    crit: float | None
    recommendation: str | None
    reason: str | None
    seconds: float
    details: tuple[Detail, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "check": self.name,
            "title": self.title,
            "state": self.state.name,
            "metric": self.metric,
            "unit": self.unit,
            "warn": self.warn,
            "crit": self.crit,
            "recommendation": self.recommendation,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "details": [dict(d) for d in self.details],
        }


@dataclass(frozen=True)
class HealthConfig:
    timeout: float = DEFAULT_TIMEOUT
    thresholds: Mapping[str, Thresholds] | None = None

    def for_check(self, check: Check) -> Thresholds:
        base = Thresholds(check.warn, check.crit, check.floor)
        return (self.thresholds or {}).get(check.name, base)


def _number(value: object, where: str) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise SmartStartError(f"{where}: expected a number or false, got {value!r}")
    return float(value)


def load_config(home: Path) -> HealthConfig:
    """Thresholds and timeout from `$SMARTSTART_HOME/health.toml`, defaults where absent."""
    path = home / CONFIG_NAME
    if not path.is_file():
        return HealthConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SmartStartError(f"cannot read {path}: {e}") from None
    by_name = {c.name: c for c in CHECKS}
    thresholds: dict[str, Thresholds] = {}
    timeout = DEFAULT_TIMEOUT
    for key, value in data.items():
        if key == "timeout":
            timeout = _positive(value, f"{path}: timeout")
            continue
        check = by_name.get(key)
        if check is None or not isinstance(value, dict):
            raise SmartStartError(
                f"{path}: unknown check {key!r}; the checks are: {', '.join(by_name)}"
            )
        unknown = set(value) - {"warn", "crit", "floor"}
        if unknown:
            raise SmartStartError(f"{path}: [{key}] has unknown keys {sorted(unknown)}")
        thresholds[key] = Thresholds(
            _number(value["warn"], f"{path}: {key}.warn") if "warn" in value else check.warn,
            _number(value["crit"], f"{path}: {key}.crit") if "crit" in value else check.crit,
            _number(value["floor"], f"{path}: {key}.floor") if "floor" in value else check.floor,
        )
    return HealthConfig(timeout, thresholds)


def _positive(value: object, where: str) -> float:
    number = _number(value, where)
    if number is None or not 0 < number <= 3600:
        raise SmartStartError(f"{where}: expected seconds between 0 and 3600, got {value!r}")
    return number


def judge(check: Check, measured: Measurement, limits: Thresholds) -> tuple[State, str | None]:
    """The verdict on one measurement and, unless OK, the one-line fix."""
    if measured.unavailable is not None:
        return State.WARN, measured.unavailable
    metric = measured.metric
    if metric is None:
        return State.OK, None
    state = State.OK
    if limits.floor is not None and metric < limits.floor:
        state = State.CRIT
    else:
        for level, limit in ((State.CRIT, limits.crit), (State.WARN, limits.warn)):
            if limit is None:
                continue
            over = metric >= limit if check.worse == "higher" else metric <= limit
            if over:
                state = level
                break
    if state is State.OK:
        return state, None
    return state, measured.fix or check.advice or None


def _measure(settings: Settings, check: Check, timeout: float) -> Measurement:
    ms = max(int(timeout * 1000), 1)
    # Its own connection and its own limits: a check that waits on a lock or scans too
    # long is cancelled by the server at its timeout, and the others never wait for it.
    # No JIT: compiling costs 100-150 ms per large statement, more than it saves here.
    options = f"-c statement_timeout={ms} -c lock_timeout={ms} -c jit=off"
    with psycopg.connect(
        settings.url_for(),
        autocommit=True,
        connect_timeout=max(2, math.ceil(timeout)),
        options=options,
        application_name=f"{monitor.HEALTH_APPLICATION} {check.name}"[:63],
    ) as conn:
        return check.run(conn)


def _result(
    check: Check, limits: Thresholds, state: State, seconds: float, **kw: object
) -> CheckResult:
    fields: dict[str, object] = {
        "metric": None,
        "unit": "",
        "recommendation": None,
        "reason": None,
        "details": (),
        **kw,
    }
    return CheckResult(
        name=check.name,
        title=check.title,
        state=state,
        warn=limits.warn,
        crit=limits.crit,
        seconds=seconds,
        **fields,  # type: ignore[arg-type]
    )


def select(names: Iterable[str] | None) -> tuple[Check, ...]:
    """The checks named (all when none), refusing a name that is no check."""
    wanted = list(names or [])
    if not wanted:
        return CHECKS
    by_name = {c.name: c for c in CHECKS}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise SmartStartError(
            f"no check named {', '.join(map(repr, unknown))}; the checks are: " + ", ".join(by_name)
        )
    return tuple(by_name[n] for n in dict.fromkeys(wanted))


def run(
    settings: Settings, checks: Sequence[Check] = CHECKS, config: HealthConfig | None = None
) -> list[CheckResult]:
    """Run the checks concurrently; each finishes, fails or times out on its own."""
    config = config or HealthConfig()
    timeout = config.timeout
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=min(len(checks), 8) or 1, thread_name_prefix="health")
    futures: dict[Future[Measurement], Check] = {
        pool.submit(_measure, settings, check, timeout): check for check in checks
    }
    # The server cancels a statement at the timeout; the grace covers connecting and the
    # round trip of that cancellation.
    finished: dict[Future[Measurement], float] = {}
    for future in futures:
        future.add_done_callback(lambda f: finished.setdefault(f, time.monotonic()))
    done, _ = wait(futures, timeout=timeout + 2.0)
    pool.shutdown(wait=False, cancel_futures=True)
    results = []
    for future, check in futures.items():
        limits = config.for_check(check)
        seconds = finished.get(future, time.monotonic()) - started
        if future not in done:
            results.append(
                _result(
                    check, limits, State.TIMEOUT, seconds, reason=f"no answer within {timeout:g} s"
                )
            )
            continue
        error = future.exception()
        if isinstance(error, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            results.append(
                _result(
                    check,
                    limits,
                    State.TIMEOUT,
                    seconds,
                    reason=f"cancelled at its {timeout:g} s timeout: {_first_line(error)}",
                )
            )
        elif error is not None:
            if not isinstance(error, psycopg.Error):
                raise error
            results.append(_result(check, limits, State.ERROR, seconds, reason=_first_line(error)))
        else:
            measured = future.result()
            state, advice = judge(check, measured, limits)
            results.append(
                _result(
                    check,
                    limits,
                    state,
                    seconds,
                    metric=measured.metric,
                    unit=measured.unit,
                    recommendation=advice,
                    details=measured.details,
                    reason=measured.unavailable or measured.limited,
                )
            )
    return results


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def worst(results: Iterable[CheckResult]) -> State:
    return max((r.state for r in results), default=State.OK)


def with_thresholds(config: HealthConfig, name: str, limits: Thresholds) -> HealthConfig:
    """A copy of config with one check's thresholds replaced (tests, callers tuning one)."""
    return replace(config, thresholds={**(config.thresholds or {}), name: limits})
