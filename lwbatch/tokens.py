"""What a bearer token says about itself, and the budget that follows from it.

Gateway tokens are JWTs. lwbatch reads their payload without verifying the signature
(the gateway verifies it): to pick a default budget, to say when the token expires and
which client it belongs to. Nothing here ever returns or logs the token itself.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from lwbatch.config import Budget, Rate, Tier, Token

_UNITS = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}
# The gateway's rate-limit classes (policy "LiftWing", April 2026) and the tier whose
# published per-second cap goes with them.
RATE_CLASSES: dict[str, Tier] = {
    "anonymous": Tier.ANONYMOUS,
    "authed-user": Tier.AUTHENTICATED,
    "established-user": Tier.ENTERPRISE,
}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The claims of a JWT's payload that lwbatch uses (None where absent)."""

    client_id: str | None  # `aud`: the client application key
    subject: str | None  # `sub`
    expires: datetime | None  # `exp`
    issued: datetime | None  # `iat`
    ratelimit: Rate | None  # old-style `ratelimit: {requests_per_unit, unit}`
    rate_class: str | None  # `rlc`

    @classmethod
    def of(cls, token: Token) -> TokenClaims | None:
        """The token's claims; None when it is not a JWT with a JSON object payload."""
        parts = token.reveal().split(".")
        if len(parts) != 3:
            return None
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            payload = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        except (binascii.Error, ValueError, UnicodeError):
            return None
        if not isinstance(payload, dict):
            return None
        audience = payload.get("aud")  # a string, or a list of them (RFC 7519)
        if isinstance(audience, list):
            audience = ", ".join(a for a in audience if isinstance(a, str))
        subject = payload.get("sub")
        rate_class = payload.get("rlc")
        return cls(
            client_id=audience if isinstance(audience, str) and audience else None,
            subject=str(subject) if isinstance(subject, str | int) else None,
            expires=_time(payload.get("exp")),
            issued=_time(payload.get("iat")),
            ratelimit=_ratelimit(payload.get("ratelimit")),
            rate_class=rate_class if isinstance(rate_class, str) else None,
        )


@dataclass(frozen=True, slots=True)
class BudgetChoice:
    """The budget a run uses, where it came from ("rate", "tier" or "token") and why."""

    budget: Budget
    source: str
    reason: str
    doubtful: bool = False  # a guess the user should check: say so as a warning


def choose_budget(
    *,
    budget: Budget | None = None,
    tier: Tier | None = None,
    token: Token | None = None,
    oauth: bool = False,
) -> BudgetChoice:
    """An explicit `budget` wins, then `tier`; else the token's claims, else the
    authenticated tier for a token or OAuth2 credentials (`oauth`) and the anonymous
    one without."""
    if budget is not None:
        return BudgetChoice(budget, "rate", "as given")
    if tier is not None:
        return BudgetChoice(Budget.for_tier(tier), "tier", f"the {tier.value} tier, as given")
    if token is None and oauth:
        return BudgetChoice(
            Budget.for_tier(Tier.AUTHENTICATED),
            "tier",
            "authenticated: the token comes from the OAuth2 credentials",
        )
    if token is None:
        return BudgetChoice(Budget.for_tier(Tier.ANONYMOUS), "tier", "anonymous: no token")
    claims = TokenClaims.of(token)
    if claims is None:
        return BudgetChoice(
            Budget.for_tier(Tier.AUTHENTICATED),
            "tier",
            "authenticated: the token is not a JWT, so it names no rate limit",
            doubtful=True,
        )
    if claims.ratelimit is not None:
        cap = _cap_for(claims.ratelimit)
        return BudgetChoice(
            Budget(windows=(claims.ratelimit, cap)),
            "token",
            f"the token's ratelimit claim ({claims.ratelimit.requests:,} per "
            f"{_unit_name(claims.ratelimit.period)}), with the {_tier_of(cap)} tier's "
            "per-second cap",
        )
    if claims.rate_class is not None:
        tier = RATE_CLASSES.get(claims.rate_class)
        if tier is not None:
            return BudgetChoice(
                Budget.for_tier(tier),
                "token",
                f"the token's rate-limit class {claims.rate_class!r} ({tier.value} tier)",
            )
        return BudgetChoice(
            Budget.for_tier(Tier.AUTHENTICATED),
            "tier",
            f"authenticated: the token's rate-limit class {claims.rate_class!r} is not one "
            "lwbatch knows; give `tier` or `budget` if it allows more",
            doubtful=True,
        )
    return BudgetChoice(
        Budget.for_tier(Tier.AUTHENTICATED),
        "tier",
        "authenticated: the token names no rate limit",
    )


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _ratelimit(claim: Any) -> Rate | None:
    if not isinstance(claim, dict):
        return None
    requests, unit = claim.get("requests_per_unit"), claim.get("unit")
    period = _UNITS.get(unit.upper()) if isinstance(unit, str) else None
    if isinstance(requests, float) and requests.is_integer():
        requests = int(requests)  # 5000.0 from a JSON encoder that writes numbers so
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        return None
    return None if period is None else Rate(requests, period)


def _cap_for(rate: Rate) -> Rate:
    """The per-second cap of the highest tier whose hourly budget `rate` reaches."""
    reached = [t for t in Tier if rate.per_second >= t.hourly.per_second]
    return max(reached or [Tier.ANONYMOUS], key=lambda t: t.hourly.requests).per_second_cap


def _tier_of(cap: Rate) -> str:
    return next(t.value for t in Tier if t.per_second_cap == cap)


def _unit_name(period: float) -> str:
    return next(name.lower() for name, seconds in _UNITS.items() if seconds == period)


__all__ = ["BudgetChoice", "RATE_CLASSES", "TokenClaims", "choose_budget"]
