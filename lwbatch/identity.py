"""Who a run sends as, resolved once: the token (fetched once from OAuth2 credentials),
the budget and why it was chosen, and whose budget the gateway counts.

Every entry point resolves its identity here (score, plan, bench, Spark), and the local
engine opens the budget it shares with every other run of that identity on the machine
(a Spark job splits its own between task slots instead: executors share no file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lwbatch.config import Budget, Tier, Token
from lwbatch.errors import UsageError
from lwbatch.pacing.shared import SharedLedger, identity
from lwbatch.settings import Connection, Pacing
from lwbatch.tokens import BudgetChoice, choose_budget

log = logging.getLogger("lwbatch")


@dataclass(frozen=True, slots=True)
class Identity:
    """The token a run sends (never shown), its budget and whose budget that is."""

    token: Token | None
    choice: BudgetChoice
    key: str  # the hash naming whose budget the gateway counts

    @property
    def budget(self) -> Budget:
        return self.choice.budget

    @classmethod
    def of(
        cls,
        connection: Connection,
        pacing: Pacing,
        *,
        budget: Budget | None = None,
        tier: Tier | None = None,
        token: Token | None = None,
    ) -> Identity:
        """The identity for a token already in hand (`token`, else the connection's):
        the budget is `budget`, else `tier`'s, else what the token says."""
        token = token if token is not None else connection.token
        credentials = connection.credentials
        if pacing.limiter is not None:
            if budget is not None or tier is not None:
                raise UsageError(
                    "`limiter` carries its own budget; give `rate`/`tier` or `limiter`"
                )
            choice = BudgetChoice(pacing.limiter.budget, "rate", "the limiter's")
        else:
            choice = choose_budget(
                budget=budget, tier=tier, token=token, oauth=credentials is not None
            )
        if choice.budget.is_unlimited and connection.endpoint.is_external_gateway:
            raise UsageError(
                "`rate` unlimited: the public API gateway enforces a tier budget (give a "
                "`tier` or N/PERIOD); unlimited is for the internal endpoints or another "
                "`endpoint`"
            )
        client_id = credentials.client_id if credentials is not None else None
        return cls(token, choice, identity(connection.endpoint, token, client_id))

    @classmethod
    async def resolve(
        cls,
        connection: Connection,
        pacing: Pacing,
        *,
        budget: Budget | None = None,
        tier: Tier | None = None,
    ) -> Identity:
        """The identity of a run, fetching a token from the credentials if there is none
        (before the run starts, so that its claims choose the budget)."""
        token = connection.token
        if token is None and connection.credentials is not None:
            token = await connection.credentials.fetch_async(verify=connection.verify)
        return cls.of(connection, pacing, budget=budget, tier=tier, token=token)

    @classmethod
    def resolve_sync(
        cls,
        connection: Connection,
        pacing: Pacing,
        *,
        budget: Budget | None = None,
        tier: Tier | None = None,
        fetch: bool = True,
    ) -> Identity:
        """:meth:`resolve` outside an event loop (plan, Spark's driver); `fetch=False`
        asks the credentials for no token (the budget is given)."""
        token = connection.token
        if token is None and connection.credentials is not None and fetch:
            token = connection.credentials.fetch(verify=connection.verify)
        return cls.of(connection, pacing, budget=budget, tier=tier, token=token)

    async def open_ledger(self, pacing: Pacing) -> SharedLedger | None:
        """The budget this run shares with the other runs of this identity on the
        machine, or None where it shares none (`share=False`, a limiter of its own, a
        clock of its own, an unlimited budget). The caller closes it."""
        if not pacing.shares or self.budget.is_unlimited:
            return None
        return await SharedLedger.open_async(self.budget, self.key, state_dir=pacing.state_dir)

    def warn_if_doubtful(self) -> None:
        if self.choice.doubtful:
            log.warning("budget %s: %s", self.budget.describe(), self.choice.reason)


__all__ = ["Identity"]
