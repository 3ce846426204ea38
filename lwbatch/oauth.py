"""New bearer tokens from an OAuth2 token endpoint, for jobs that outlive one token.

A run given :class:`Credentials` asks the endpoint for a token when it has none, and
again when the gateway answers 401 (the token expired): once per 401, then the request
is sent again. Tokens live in memory only; nothing here writes or logs one.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import orjson

from lwbatch.config import Endpoint, Token
from lwbatch.errors import AuthenticationError, UsageError

if TYPE_CHECKING:
    import httpx

# Wikimedia's OAuth 2.0 token endpoint (Meta-Wiki's REST API).
DEFAULT_TOKEN_URL = "https://meta.wikimedia.org/w/rest.php/oauth2/access_token"
_TIMEOUT = 30.0
# Seconds between asking the token endpoint again while it fails in a way that passes:
# a long run outlives a short outage of it (about a minute).
WAITS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An OAuth2 client (its consumer key and secret) and, optionally, a refresh token;
    without one, tokens come from the client credentials grant. Secrets never show."""

    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_url: str = DEFAULT_TOKEN_URL
    # The endpoint may rotate refresh tokens (RFC 6749 section 6): the latest one it
    # gave replaces `refresh_token`, in memory only.
    _rotated: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise UsageError("`credentials` need a client_id and a client_secret")
        endpoint = Endpoint(base_url=self.token_url)  # checks the URL's shape
        if endpoint.is_plain_http and not endpoint.is_loopback:
            raise UsageError(
                f"`token_url` {self.token_url}: plain http would send the client secret in "
                "clear text; use https"
            )

    @classmethod
    def from_file(cls, path: Path, *, token_url: str | None = None) -> Credentials:
        """A TOML file: client_id, client_secret, and optionally refresh_token, token_url."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"`credentials` {path}: cannot read it ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"`credentials` {path}: not TOML ({exc})") from None
        unknown = sorted(set(data) - {"client_id", "client_secret", "refresh_token", "token_url"})
        if unknown:
            raise UsageError(f"`credentials` {path}: unknown key {unknown[0]!r}")
        values = {k: v for k, v in data.items() if isinstance(v, str)}
        if len(values) != len(data):
            raise UsageError(f"`credentials` {path}: every value must be a string")
        if token_url is not None:
            values["token_url"] = token_url
        try:
            return cls(
                client_id=values.get("client_id", ""),
                client_secret=values.get("client_secret", ""),
                refresh_token=values.get("refresh_token"),
                token_url=values.get("token_url", DEFAULT_TOKEN_URL),
            )
        except UsageError as exc:
            said = str(exc).removeprefix("`credentials` ")
            raise UsageError(f"`credentials` {path}: {said}") from None

    def _form(self) -> dict[str, str]:
        form = {"client_id": self.client_id, "client_secret": self.client_secret}
        refresh = self._rotated[-1] if self._rotated else self.refresh_token
        if refresh is not None:
            return {**form, "grant_type": "refresh_token", "refresh_token": refresh}
        return {**form, "grant_type": "client_credentials"}

    def fetch(self, *, verify: bool = True, waits: Sequence[float] | None = None) -> Token:
        """A new access token (blocking); asks again after each of `waits` (seconds;
        default :data:`WAITS`) while the endpoint fails in a way that passes (5xx, 429,
        no connection)."""
        call = partial(self.fetch_async, verify=verify, waits=waits)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(call())
        # Called from inside a running loop (a notebook): on a thread of its own.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, call()).result()

    async def fetch_async(
        self,
        *,
        verify: bool = True,
        waits: Sequence[float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> Token:
        """A new access token; asks again as :meth:`fetch` does."""
        import httpx  # here: only runs with credentials pay for importing it

        waits = WAITS if waits is None else waits
        reason = ""
        for wait in [*waits, None]:
            try:
                async with httpx.AsyncClient(timeout=_TIMEOUT, verify=verify) as client:
                    outcome = self._token(await client.post(self.token_url, data=self._form()))
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            if isinstance(outcome, Token):
                return outcome
            reason = outcome
            if wait is None:
                break
            await sleep(wait)
        raise self._unreachable(reason, len(waits) + 1)

    def _token(self, response: httpx.Response) -> Token | str:
        """The token, or why asking again may help; raises when it cannot."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        status = response.status_code
        if status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            reason = f"HTTP {status}" + (f" {error}" if error else "")
            if status >= 500 or status == 429:
                return reason
            raise self._failed(reason)
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise self._failed("the answer holds no access_token")
        rotated = body.get("refresh_token")
        if self.refresh_token is not None and isinstance(rotated, str) and rotated:
            self._rotated[:] = [rotated]
        return Token(value)

    def _unreachable(self, reason: str, attempts: int) -> AuthenticationError:
        error = AuthenticationError(url=self.token_url)
        error.args = (
            f"cannot get a token from {self.token_url}: {reason} at each of {attempts} "
            "attempts; the token endpoint is down or unreachable: try again later",
        )
        return error

    def _failed(self, reason: str) -> AuthenticationError:
        error = AuthenticationError(url=self.token_url)
        error.args = (
            f"cannot get a token from {self.token_url}: {reason}; check the client id, "
            "secret and refresh token in `credentials`",
        )
        return error


class TokenRefresher:
    """One refresh at a time: requests that met the same expired token share it.

    A 401 refreshes only a token that worked (some request sent with it got another
    answer) or the first one: a token just issued and refused at once means the client
    may not use the API, and asking again would never end.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        verify: bool = True,
        waits: Sequence[float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.credentials = credentials
        self._verify = verify
        self._waits = waits
        self._sleep = sleep
        self._lock = anyio.Lock()
        self.generation = 0  # counts the tokens in use so far
        self.refreshes = 0
        self._worked = False  # whether the current generation's token got past the gateway

    def accepted(self, generation: int) -> None:
        """A request sent with the token of `generation` got an answer other than 401."""
        if generation == self.generation:
            self._worked = True

    def may_refresh(self, seen: int) -> bool:
        """Whether a 401 for a request sent with the token of generation `seen` may
        lead to a new token (or to the one a concurrent refresh already got)."""
        return seen != self.generation or self.generation == 0 or self._worked

    async def refresh(self, seen: int) -> Token | None:
        """A new token if the one of generation `seen` is still in use, else None (a
        concurrent refresh already replaced it)."""
        async with self._lock:
            if seen != self.generation:
                return None
            token = await self.credentials.fetch_async(
                verify=self._verify, waits=self._waits, sleep=self._sleep
            )
            self.generation += 1
            self.refreshes += 1
            self._worked = False
            return token


__all__ = ["DEFAULT_TOKEN_URL", "WAITS", "Credentials", "TokenRefresher"]
