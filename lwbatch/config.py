"""Run configuration as frozen, self-validating values.

Conversions from argv or the environment happen at the edge (lwbatch/cli/); everything
here accepts one shape per field and refuses anything else with a message that names
the parameter, in backticks (the CLI turns it into its flag).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from lwbatch.errors import UsageError

EXTERNAL_BASE_URL = "https://api.wikimedia.org/service/lw/inference"
INTERNAL_BASE_URL = "https://inference.discovery.wmnet:30443"
STAGING_BASE_URL = "https://inference-staging.svc.codfw.wmnet:30443"
# The gateway route times out after 30 s; wait a little longer so its 504 reaches us.
DEFAULT_TIMEOUT = 35.0

_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `requests` in any sliding window of `period` seconds."""

    requests: int
    period: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not math.isfinite(self.period) or self.period <= 0:
            raise ValueError(f"a rate needs requests >= 1 and period > 0, got {self}")

    @property
    def per_second(self) -> float:
        return self.requests / self.period

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`50000/h`, `1000/10s`, `20/s`, `300/3s`."""
        match = _RATE.fullmatch(text.lower())
        unit = _PERIODS.get(match.group(3) or "s") if match else None
        if match is None or unit is None:
            raise UsageError(
                f"`rate` {text!r} is not N/PERIOD; write e.g. 50000/h, 1000/10s or 20/s"
            )
        count = int(match.group(1))
        multiple = float(match.group(2)) if match.group(2) else 1.0
        if count < 1 or multiple <= 0:
            raise UsageError(f"`rate` {text!r} must allow at least 1 request per positive period")
        return cls(count, multiple * unit)

    def __str__(self) -> str:
        return f"{self.requests}/{self.period:g}s"


class Tier(StrEnum):
    """API gateway rate-limit tiers (requests per hour, published per-second cap)."""

    ANONYMOUS = "anonymous"
    AUTHENTICATED = "authenticated"
    ENTERPRISE = "enterprise"

    @property
    def hourly(self) -> Rate:
        return Rate(
            {"anonymous": 50_000, "authenticated": 100_000, "enterprise": 200_000}[self], 3600.0
        )

    @property
    def per_second_cap(self) -> Rate:
        return Rate({"anonymous": 15, "authenticated": 100, "enterprise": 200}[self], 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """The request budget: every window holds; pacing follows the tightest one."""

    windows: tuple[Rate, ...]
    # Slack that lets a late wake-up catch up instead of losing rate (at most
    # tolerance / interval requests at once); never a burst after idle time.
    tolerance: float = 0.2
    # Each window is enforced as period + margin, so that a request delayed between its
    # grant and its arrival more than the one granted a window later never lets a
    # server count N+1. Default: 0.75% of the period, at most 20 ms, for short windows
    # (compressed budgets on loopback; 40-380 ms loop stalls, which once needed more,
    # are off the event loop now: benchmarks/first_request.py); 0.1 s for windows of a
    # minute or more (a gateway's, across the internet), which costs nothing there.
    margin: float | None = None
    # Extra delay assumed for the requests of the first window, which open the
    # connections (and, against the real gateway, do the TLS handshakes); costs that
    # much once per run. Default (None): 0.1 s, or 0.02 s on loopback, where first
    # requests were measured to arrive at most 36 ms after their grant.
    cold_start: float | None = None

    def cold_start_for(self, *, loopback: bool) -> float:
        if self.cold_start is not None:
            return self.cold_start
        return 0.02 if loopback else 0.1

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        if self.cold_start is not None and self.cold_start < 0:
            raise ValueError("cold_start must be >= 0")
        if self.margin is not None and self.margin < 0:
            raise ValueError("margin must be >= 0")

    def margin_for(self, window: Rate) -> float:
        if self.margin is not None:
            return self.margin
        if window.period >= 60.0:
            return 0.1
        return min(0.0075 * window.period, 0.02)

    @classmethod
    def for_tier(cls, tier: Tier) -> Budget:
        return cls(windows=(tier.hourly, tier.per_second_cap))

    @classmethod
    def from_rate(cls, rate: Rate) -> Budget:
        return cls(windows=(rate,))

    @classmethod
    def unlimited(cls) -> Budget:
        """No windows: for endpoints without a gateway (internal, the emulator, benchmarks)."""
        return cls(windows=())

    @classmethod
    def parse(cls, text: str) -> Budget:
        """N/PERIOD (as for :meth:`Rate.parse`), or `unlimited`."""
        if text.strip().lower() == "unlimited":
            return cls.unlimited()
        return cls.from_rate(Rate.parse(text))

    def share(self, parts: int, index: int = 0) -> Budget:
        """Share `index` of `parts`: the shares of 0..parts-1 add up to exactly each
        window of this budget, so together they never exceed it. Each window's requests
        are divided evenly and the remainder goes one each to the first shares (15/s
        over 8: 2/s for shares 0-6, 1/s for share 7)."""
        if parts < 1:
            raise UsageError(f"`slots` must be >= 1, got {parts}")
        if not 0 <= index < parts:
            raise ValueError(f"share index {index} is outside 0..{parts - 1}")
        for window in self.windows:
            if window.requests < parts:
                raise UsageError(
                    f"`slots` {parts}: the budget's window {window} allows fewer requests "
                    "than there are task slots; give fewer slots or a larger budget"
                )
        windows = tuple(
            Rate(w.requests // parts + (index < w.requests % parts), w.period) for w in self.windows
        )
        return Budget(
            windows=windows,
            tolerance=self.tolerance,
            margin=self.margin,
            cold_start=self.cold_start,
        )

    @property
    def is_unlimited(self) -> bool:
        return not self.windows

    @property
    def rate(self) -> float:
        """Sustained requests per second (infinite when unlimited)."""
        return min((w.per_second for w in self.windows), default=math.inf)

    def describe(self) -> str:
        return " and ".join(str(w) for w in self.windows) or "unlimited"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retries for transient failures (5xx, timeouts, resets) and for 429s."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_rate_limited: int = 30
    # A 429 without Retry-After: the gateway's own default when it knows no reset time.
    default_retry_after: float = 60.0
    # Connection failures in a row, before the endpoint ever answered, that end the run.
    unreachable_after: int = 10
    # Distinct revisions of one (model, wiki) whose retries all ended on the same 500
    # body, with nothing scored in between, after which the rest of that (model, wiki)
    # is not sent this run (lwbatch/engine/faults.py).
    server_fault_after: int = 3
    # Failed batches of one (model, wiki) split in halves to find the revision that
    # fails them (revertrisk answers 500 for a whole batch when one fetch fails).
    max_splits: int = 64

    def __post_init__(self) -> None:
        if (
            min(
                self.max_attempts,
                self.max_rate_limited,
                self.unreachable_after,
                self.server_fault_after,
            )
            < 1
        ):
            raise ValueError(
                "max_attempts, max_rate_limited, unreachable_after and server_fault_after "
                "must be >= 1"
            )
        if self.max_splits < 0:
            raise ValueError("max_splits must be >= 0")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ValueError("need 0 <= backoff_base <= backoff_max")


@dataclass(frozen=True, slots=True)
class Token:
    """An OAuth2 bearer token. Its repr and str never show the secret."""

    _value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self._value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in self._value):
            raise UsageError(
                "the token is empty or contains whitespace or control characters; "
                "put only the bearer token in `token`"
            )

    @classmethod
    def from_file(cls, token_file: Path) -> Token:
        try:
            text = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"`token_file` {token_file}: cannot read it ({exc.__class__.__name__})"
            ) from None
        # One trailing newline is what editors write; anything else inside is an error.
        value = text.strip()
        if not value:
            raise UsageError(f"`token_file` {token_file} is empty; put the bearer token in it")
        return cls(value)

    def header(self) -> str:
        return f"Bearer {self._value}"

    def reveal(self) -> str:
        """The secret itself, for redaction checks; never log it."""
        return self._value

    def __str__(self) -> str:
        return "Token(***)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where requests go: `{base_url}/v1/models/{model}:predict`."""

    base_url: str = EXTERNAL_BASE_URL
    # The internal endpoint routes by `Host: {model}.{namespace}.wikimedia.org`.
    host_header: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"`base_url` {self.base_url!r} must be an absolute http(s) URL, "
                "e.g. http://127.0.0.1:8080"
            )
        if parts.username or parts.password:
            raise UsageError(
                "`base_url` must not hold credentials (user:password@); "
                "put a token in `token` instead"
            )
        if parts.query or parts.fragment or any(c.isspace() for c in self.base_url):
            raise UsageError(
                f"`base_url` {self.base_url!r} must not have a query, fragment or spaces"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def external(cls) -> Endpoint:
        return cls()

    @classmethod
    def internal(cls, *, staging: bool = False) -> Endpoint:
        """Lift Wing's internal endpoint (production, or `staging`), which routes each
        request by its `Host: {model}.{namespace}.wikimedia.org` header."""
        return cls(base_url=STAGING_BASE_URL if staging else INTERNAL_BASE_URL, host_header=True)

    @property
    def is_external_gateway(self) -> bool:
        return self.base_url == EXTERNAL_BASE_URL

    @property
    def is_loopback(self) -> bool:
        host = urlsplit(self.base_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def is_plain_http(self) -> bool:
        return urlsplit(self.base_url).scheme == "http"

    def url(self, model: str) -> str:
        return f"{self.base_url}/v1/models/{model}:predict"
