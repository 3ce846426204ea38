"""A local Lift Wing: the real endpoints and answer shapes, deterministic scores.

Scores depend only on (model, wiki, rev_id), so a test can know every value in advance.
rev_ids are unique per wiki only, and so are the scores: revision 12345 scores one way
on enwiki and another on dewiki.

The scoring rule:

- The *key* is the model name for a model that takes no `lang` (a revscoring name holds
  its wiki: ``enwiki-damaging``; revertrisk-wikidata is Wikidata's), and
  ``{model}@{wiki}`` for one that does, `wiki` being the database name of the wiki the
  sent lang names as that model's server reads it: for code-form models (revertrisk,
  reference-need/-risk) the Wikipedia that :func:`lwbatch.wikis.wikis` ``.by_lang``
  gives it (``yue`` -> zh_yuewiki); for host-form models (articlequality, readability,
  outlink-topic-model) the Wikipedia whose host it is (``zh-yue`` -> zh_yuewiki; ``yue``
  is no host). ``test`` names testwiki.
- ``unit(key, rev_id, salt)``: a 64-bit seed made of the CRC-32 of the UTF-8 key in the
  high half, XOR the rev_id, XOR salt times 0x9E3779B97F4A7C15; then SplitMix64 (Steele,
  Lea and Flood 2014: one increment by that constant and the MurmurHash3-style
  finaliser); the top 53 bits as a fraction of 2**53.
- Binary models (damaging, goodfaith, reverted, revertrisk-*): P(true) is
  ``round(unit(key, rev_id), 4)``, P(false) ``round(1 - P(true), 4)``, the prediction
  ``P(true) > 0.5``.
- Score models (articlequality, readability, reference-need/-risk): the score is
  ``round(unit(key, rev_id), 4)``; readability's fk_score_proxy
  ``round(20 * unit(key, rev_id, 1), 2)``.
- Revscoring topic models: label i (in the catalogue's order) has
  ``round(unit(key, rev_id, i + 1), 4)``; the prediction lists the labels above 0.5.
  Quality models: weights ``unit(key, rev_id, i + 1) + 1e-9``, normalised and rounded
  to 4 places; the prediction is the largest.
- outlink-topic-model: label i scores ``round(unit(key, revision_id, i + 1), 4)``; the
  results are the labels scoring >= the threshold (0.5 unless sent), by score
  descending, ties in catalogue order.

Servers check the language as the real ones do (lwbatch/testing/answers.py has each
server's rules): a ``wiki`` suffix, a code not in the canonical list, a language
readability does not serve (`unsupported`), or a host that is no Wikipedia's. `wiki_db`
is ``lang + "wiki"`` as sent, as the servers build it (``yue`` answers ``yuewiki``).

Faults are injected on request: latency distributions, revisions with a problem
(missing, deleted, a missing parent, a hidden user, one whose fetch raises and fails
its whole revertrisk batch, ...: answered as each server answers them,
lwbatch/testing/answers.py), articlequality's 500 KeyError for a wiki outside its
feature table, undeployed models and models of wikis that do not exist (404), 5xx, connection
resets, hung requests, a gateway that refuses anonymous callers or a wrong token (401
with a Bearer challenge), and a gateway budget that answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx
import orjson
from aiohttp import web

from lwbatch.config import Rate, Token
from lwbatch.errors import LWBatchError, UsageError
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog
from lwbatch.testing.answers import PROBLEMS, Instance, Problem, Reply, read_request, reply
from lwbatch.testing.stream import EmulatedStream, StreamConfig
from lwbatch.tokens import TokenClaims
from lwbatch.wikis import wikis

# Languages the emulated readability does not serve, beside anything that is no
# Wikipedia host. The real list is the model's `supported_wikis` (~100 languages); one
# small Wikipedia stands for the rest so that the refusal can be exercised.
DEFAULT_UNSUPPORTED: Mapping[str, frozenset[str]] = MappingProxyType(
    {"readability": frozenset({"vo"})}
)
# The servers that refuse a language they do not serve ("Unsupported lang: xx."):
# readability before it fetches anything, reference-need/-risk in their classifier.
_REFUSING = frozenset({"readability", "reference-need", "reference-risk"})


@dataclass(frozen=True, slots=True)
class Latency:
    """How long the emulator takes to answer: fixed, uniform or lognormal."""

    kind: str = "fixed"
    a: float = 0.0  # fixed: seconds; uniform: low; lognormal: median
    b: float = 0.0  # uniform: high; lognormal: sigma

    @classmethod
    def parse(cls, text: str) -> Latency:
        """`0`, `0.05`, `uniform:0.1:0.5`, `lognormal:0.45:1.03`, or `liftwing`."""
        if text == "liftwing":
            # Median 0.45 s, p99 ~5 s: revscoring servers as Wikimedia measured them.
            return cls("lognormal", 0.45, 1.03)
        parts = text.split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", float(parts[0]))
            if len(parts) == 3 and parts[0] in ("uniform", "lognormal"):
                return cls(parts[0], float(parts[1]), float(parts[2]))
        except ValueError:
            pass
        raise UsageError(
            f"`latency` {text!r}: write SECONDS, uniform:LOW:HIGH, "
            "lognormal:MEDIAN:SIGMA or liftwing"
        )

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "lognormal":
            return min(self.a * math.exp(rng.gauss(0.0, self.b)), 60.0)
        return self.a


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    latency: Latency = Latency()
    max_rev_id: int = 2_000_000_000  # larger rev_ids are unknown revisions
    missing: frozenset[int] = frozenset()
    deleted: frozenset[int] = frozenset()
    # rev_id -> what is wrong with it (every wiki's revision of that id)
    problems: Mapping[int, Problem] = field(default_factory=dict)
    undeployed: frozenset[str] = frozenset()  # model names that answer 404
    # model -> languages it does not serve (only readability's server refuses them)
    unsupported: Mapping[str, frozenset[str]] = field(default_factory=lambda: DEFAULT_UNSUPPORTED)
    error_rate: float = 0.0  # share of requests answered with a 5xx
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    # Seconds an emulated 503 asks to wait (Retry-After), as the gateway's 503s do; off
    # by default so that fault tests keep their pace.
    retry_after_503: int | None = None
    reset_rate: float = 0.0  # share of requests whose connection is cut
    hang_rate: float = 0.0  # share of requests never answered
    # The gateway's sliding window per caller (a client's tokens, another token, or
    # anonymous), as the gateway counts; over it: 429.
    budget: Rate | None = None
    storm_after: int | None = None  # after this many requests, 429 for storm_seconds
    storm_seconds: float = 1.0
    # When set, the gateway takes only this bearer token, and no anonymous callers.
    token: str | None = None
    # An OAuth2 token endpoint (POST /oauth2/access_token) for this client (id, secret):
    # its tokens are taken by the gateway for `token_uses` requests each, then expire
    # (401, as an expired JWT gets). `refresh_token`: also the refresh_token grant.
    oauth_client: tuple[str, str] | None = None
    refresh_token: str | None = None
    token_uses: int = 1_000_000
    # Each refresh_token grant answers with a new refresh token and the old one stops
    # working, as endpoints that rotate them do.
    rotate_refresh: bool = False
    # After this many tokens the endpoint refuses (invalid_grant): a test's bound on
    # a client that would ask for ever.
    max_tokens: int | None = None
    # Tokens issued are JWTs with these claims (unsigned), as the gateway's are; else
    # opaque strings. Token requests numbered (from 1) first..last answer 503.
    token_claims: Mapping[str, Any] | None = None
    # Route as the internal endpoints do: a request whose Host is not
    # MODEL.NAMESPACE.wikimedia.org finds no server (404).
    require_host: bool = False
    token_outage: tuple[int, int] | None = None
    track_pairs: bool = True  # count answers per (model, wiki, rev_id) for tests
    seed: int = 0
    # The revision-create stream served at /v2/stream/... (lwbatch/testing/stream.py).
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"`{name}` must be between 0 and 1")
        if self.retry_after_503 is not None and self.retry_after_503 < 0:
            raise UsageError(f"`retry_after_503` must be >= 0 seconds, got {self.retry_after_503}")
        others = sorted(set(self.unsupported) - _REFUSING)
        if others:
            raise UsageError(
                f"`unsupported` names {', '.join(others)}: of the emulated servers only "
                f"{', '.join(sorted(_REFUSING))} refuse languages they do not serve"
            )


def parse_problems(values: Iterable[str]) -> Mapping[int, Problem]:
    """`poison:12,15` (one kind per value) -> {12: "poison", 15: "poison"}."""
    out: dict[int, Problem] = {}
    for text in values:
        kind, sep, revs = text.partition(":")
        found = next((p for p in PROBLEMS if p == kind), None)
        parts = revs.split(",")
        if not sep or found is None or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UsageError(
                f"`problem` {text!r}: write KIND:REV_ID,REV_ID (positive integers) with KIND "
                f"one of {', '.join(PROBLEMS)}"
            )
        for rev_id in map(int, parts):
            if out.get(rev_id, found) != found:
                raise UsageError(
                    f"`problem` {text!r}: revision {rev_id} is {out[rev_id]} already; a "
                    "revision has one problem"
                )
            out[rev_id] = found
    return MappingProxyType(out)


def parse_unsupported(values: Iterable[str]) -> Mapping[str, frozenset[str]]:
    """`readability:vo,zh-yue` (one per model) -> {"readability": {"vo", "zh-yue"}}.

    A model named here serves every Wikipedia host but these; models not named keep
    :data:`DEFAULT_UNSUPPORTED`.
    """
    out = dict(DEFAULT_UNSUPPORTED)
    for text in values:
        model, sep, langs = text.partition(":")
        codes = frozenset(part.strip() for part in langs.split(",") if part.strip())
        if not sep or not model.strip():
            raise UsageError(
                f"`unsupported` {text!r}: write MODEL:LANG,LANG, e.g. readability:vo,zh-yue"
            )
        out[model.strip()] = codes
    return MappingProxyType(out)


@dataclass(slots=True)
class EmulatorStats:
    requests: int = 0
    resets: int = 0  # connections cut on purpose
    hangs: int = 0  # requests never answered on purpose
    by_status: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)  # requests past the gateway
    # Final answers about a revision (a score, or that it is missing or deleted) per
    # (model, wiki database name, rev_id); wiki is the model's own for models without
    # lang (wikidatawiki for the Wikidata ones).
    answered: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    arrivals: array[float] = field(default_factory=lambda: array("d"))
    tokens_issued: int = 0  # by the OAuth2 token endpoint
    misrouted: int = 0  # requests whose Host named no model server (require_host)

    def to_dict(self) -> dict[str, Any]:
        repeated = sum(1 for n in self.answered.values() if n > 1)
        return {
            "requests": self.requests,
            "resets": self.resets,
            "hangs": self.hangs,
            "by_status": dict(self.by_status),
            "by_model": dict(self.by_model),
            "pairs_answered": len(self.answered),
            "pairs_answered_twice": repeated,
            "tokens_issued": self.tokens_issued,
            "misrouted": self.misrouted,
        }


class Emulator:
    """The aiohttp application and its state."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, catalog: Catalog | None = None
    ) -> None:
        self.config = config or EmulatorConfig()
        self.catalog = catalog or default_catalog()
        self.stats = EmulatorStats()
        self._rng = random.Random(self.config.seed)
        self._windows: dict[str, deque[float]] = {}
        self._storm_until: float | None = None
        self._specs: dict[str, ModelSpec | None] = {}
        self.app = web.Application()
        self.app.router.add_post("/v1/models/{target}", self._predict)
        self.app.router.add_get("/_emulator/stats", self._stats)
        self.app.router.add_post("/oauth2/access_token", self._issue_token)
        self.stream = EmulatedStream(self.config.stream)
        self.app.router.add_get("/v2/stream/{streams}", self.stream.handle)
        # Tokens the token endpoint issued -> requests each may still make.
        self._issued: dict[str, int] = {}
        self._refresh: str | None = None  # the refresh token the endpoint takes now
        self._token_requests = 0

    # -- answers -------------------------------------------------------------------
    def answer(
        self, spec: ModelSpec, rev_id: int, lang: str = "", *, page_id: int | None = None
    ) -> dict[str, Any]:
        """The 200 body for one revision, exactly as the real model server shapes it.

        `lang` as the model is sent it; `page_id` for outlink-topic-model. ValueError if
        the server would answer anything but 200 (a refused lang, a missing revision).
        """
        payload: dict[str, Any] = {"rev_id": rev_id}
        if spec.family.answer == "outlink":
            payload = {"revision_id": rev_id, "page_id": page_id}
        if spec.needs_lang:
            payload["lang"] = lang
        found = self.reply(spec, payload)
        if found.status != 200:
            raise ValueError(f"{spec.name} answers {found.status} to {payload}: {found.body}")
        body: dict[str, Any] = found.body
        return body

    def reply(self, spec: ModelSpec, data: Any) -> Reply:
        """What spec's server answers to a decoded request body, past the gateway and
        without injected faults; nothing is counted."""
        instances = read_request(spec, data, unsupported=self.config.unsupported)
        if isinstance(instances, Reply):
            return instances
        batched = isinstance(data, dict) and "instances" in data
        return reply(spec, instances, batched=batched, problem=self._problem)

    def _problem(self, rev_id: int) -> Problem | None:
        if rev_id > self.config.max_rev_id or rev_id in self.config.missing:
            return "missing"
        if rev_id in self.config.deleted:
            return "deleted"
        return self.config.problems.get(rev_id)

    # -- HTTP ------------------------------------------------------------------------
    async def _stats(self, request: web.Request) -> web.Response:
        data = self.stats.to_dict()
        stream = self.stream.stats
        data["stream"] = {
            "connections": stream.connections,
            "events_sent": stream.events_sent,
            "resumed_from": stream.resumed_from,
        }
        if request.query.get("arrivals"):
            # time.monotonic() is system-wide on Linux: comparable with the client's.
            data["arrivals"] = list(self.stats.arrivals)
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        now = time.monotonic()
        stats.arrivals.append(now)
        response = self._gate(request, now)
        if response is None:
            response = await self._serve(request)
        if response is not None:
            stats.by_status[str(response.status)] += 1
        return response if response is not None else web.Response(status=204)

    def _gate(self, request: web.Request, now: float) -> web.Response | None:
        """The API gateway: auth, the 429 storm and the sliding-window budget."""
        cfg = self.config
        if cfg.oauth_client is not None:
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            left = self._issued.get(sent, 0)
            if left > 0:
                self._issued[sent] = left - 1
            elif cfg.token is None or sent != cfg.token:
                return _unauthorized(request, "")
        elif cfg.token is not None:
            refused = _unauthorized(request, cfg.token)
            if refused is not None:
                return refused
        if (
            cfg.storm_after is not None
            and self._storm_until is None
            and self.stats.requests > cfg.storm_after
        ):
            self._storm_until = now + cfg.storm_seconds
        if self._storm_until is not None and now < self._storm_until:
            return _too_many(self._storm_until - now)
        if cfg.budget is not None:
            window = self._windows.setdefault(self._caller(request), deque())
            while window and window[0] <= now - cfg.budget.period:
                window.popleft()
            if len(window) >= cfg.budget.requests:
                return _too_many(window[0] + cfg.budget.period - now)
            window.append(now)
        return None

    def _caller(self, request: web.Request) -> str:
        """Whose budget a request counts against: its client, its token, or anonymous."""
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not sent:
            return "anonymous"
        if sent in self._issued:
            return "client"
        try:
            claims = TokenClaims.of(Token(sent))
        except UsageError:
            claims = None
        if claims is not None and claims.client_id:
            return f"client {claims.client_id} {claims.subject}"
        return f"token {sent}"

    async def _issue_token(self, request: web.Request) -> web.Response:
        """An OAuth2 token endpoint (RFC 6749): client_credentials and refresh_token."""
        cfg = self.config
        form = await request.post()
        self._token_requests += 1
        outage = cfg.token_outage
        if outage is not None and outage[0] <= self._token_requests <= outage[1]:
            return _json(503, {"error": "temporarily_unavailable"})
        client = (str(form.get("client_id", "")), str(form.get("client_secret", "")))
        if cfg.oauth_client is None or client != cfg.oauth_client:
            return _json(401, {"error": "invalid_client", "error_description": "bad client"})
        grant = form.get("grant_type")
        if self._refresh is None:
            self._refresh = cfg.refresh_token
        refresh_ok = self._refresh is not None and form.get("refresh_token") == self._refresh
        spent = cfg.max_tokens is not None and self.stats.tokens_issued >= cfg.max_tokens
        if (
            spent
            or grant not in ("client_credentials", "refresh_token")
            or (grant == "refresh_token" and not refresh_ok)
        ):
            return _json(400, {"error": "invalid_grant", "error_description": "refused"})
        self.stats.tokens_issued += 1
        issued = f"emulated-token-{self.stats.tokens_issued}-{secrets.token_hex(8)}"
        if cfg.token_claims is not None:
            claims = {**cfg.token_claims, "jti": issued}
            issued = (
                ".".join(
                    base64.urlsafe_b64encode(orjson.dumps(part)).rstrip(b"=").decode()
                    for part in ({"alg": "none", "typ": "JWT"}, claims)
                )
                + ".emulated-signature"
            )
        self._issued[issued] = cfg.token_uses
        answer = {"token_type": "Bearer", "expires_in": 14400, "access_token": issued}
        if grant == "refresh_token" and cfg.rotate_refresh:
            self._refresh = f"emulated-refresh-{self.stats.tokens_issued}-{secrets.token_hex(8)}"
            answer["refresh_token"] = self._refresh
        return _json(200, answer)

    async def _serve(self, request: web.Request) -> web.Response | None:
        cfg = self.config
        target = request.match_info["target"]
        model = target.removesuffix(":predict")
        self.stats.by_model[model] += 1
        spec = self._spec(model)
        if cfg.require_host and (spec is None or request.host != spec.host):
            self.stats.misrouted += 1
            return _json(404, {"httpCode": 404, "httpReason": "no route for this Host"})
        if (
            not target.endswith(":predict")
            or spec is None
            or model in cfg.undeployed
            or (spec.family.answer == "revscoring" and spec.wiki not in wikis().by_dbname)
        ):
            # The gateway routes WIKI-KIND for any WIKI; no server answers for a wiki
            # that does not exist.
            return _json(404, {"httpCode": 404, "httpReason": "Not Found"})
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json(400, {"error": "Request body is not valid JSON."})
        instances = read_request(spec, data, unsupported=cfg.unsupported)
        if isinstance(instances, Reply):
            return _json(instances.status, instances.body)
        delay = cfg.latency.sample(self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        roll = self._rng.random()
        if roll < cfg.hang_rate:
            self.stats.hangs += 1
            await asyncio.sleep(3600)
        roll -= cfg.hang_rate
        if roll < cfg.reset_rate:
            self.stats.resets += 1
            if request.transport is not None:
                request.transport.abort()
            return None
        roll -= cfg.reset_rate
        if roll < cfg.error_rate:
            return self._fault(self._rng.choice(cfg.error_statuses))
        answer = reply(spec, instances, batched="instances" in data, problem=self._problem)
        if answer.final:
            self._count(spec, instances)
        return _json(answer.status, answer.body)

    def _fault(self, status: int) -> web.Response:
        response = _json(
            status,
            {
                "error": "An error happened while fetching feature values from the MediaWiki "
                f"API (emulated {status})."
            },
        )
        if status == 503 and self.config.retry_after_503 is not None:
            response.headers["Retry-After"] = str(self.config.retry_after_503)
        return response

    def _count(self, spec: ModelSpec, instances: list[Instance]) -> None:
        if self.config.track_pairs:
            # A repeated revision in one request is one answer (the batch server dedups).
            for wiki, rev_id in dict.fromkeys((i.wiki, i.rev_id) for i in instances):
                self.stats.answered[(spec.name, wiki, rev_id)] += 1

    def _spec(self, model: str) -> ModelSpec | None:
        if model not in self._specs:
            try:
                self._specs[model] = self.catalog.resolve(model)
            except LWBatchError:
                self._specs[model] = None
        return self._specs[model]


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _unauthorized(request: web.Request, token: str) -> web.Response | None:
    """The gateway's JWT check (Envoy's jwt_authn filter) with anonymous access off.

    The challenge is that filter's: its realm is the request's URI, and a token that
    fails verification adds error="invalid_token" where a missing one does not. The
    body is the documented ``Unauthorized`` (liftwing-api.md, section 3), not Envoy's
    own text.
    """
    sent = request.headers.get("Authorization")
    if sent == f"Bearer {token}":
        return None
    uri = f"{request.scheme}://{request.host}{request.raw_path[:256]}"
    challenge = f'Bearer realm="{uri}"'
    if sent is not None:
        challenge += ', error="invalid_token"'
    return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": challenge})


def _too_many(seconds: float) -> web.Response:
    return web.Response(
        status=429,
        text="Too many requests: you have exceeded the rate limit for this API.",
        headers={"Retry-After": str(max(1, math.ceil(seconds)))},
    )


async def serve(
    emulator: Emulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(
        emulator.app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner, int(runner.addresses[0][1])


@contextmanager
def running(
    config: EmulatorConfig | None = None, *, port: int = 0
) -> Iterator[tuple[Emulator, str]]:
    """Run an emulator on 127.0.0.1 in a background thread; yields it and its base URL."""
    emulator = Emulator(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    bound: list[int] = []
    failure: list[BaseException] = []
    holder: dict[str, web.AppRunner] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner, actual = loop.run_until_complete(serve(emulator, port=port))
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)
            loop.close()
            started.set()
            return
        holder["runner"] = runner
        bound.append(actual)
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="lwbatch-emulator", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise UsageError(f"the emulator could not listen on 127.0.0.1:{port} ({failure[0]})")
    try:
        yield emulator, f"http://127.0.0.1:{bound[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@contextmanager
def spawned(*options: str, startup: float = 20.0) -> Iterator[str]:
    """`lwbatch emulate OPTIONS` in a process of its own on a free loopback port; yields
    its base URL. Measurements need this: in a thread it would share our GIL and loop."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwbatch", "emulate", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            try:
                httpx.get(f"{base_url}/_emulator/stats", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LWBatchError("the emulator did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fetch_stats(base_url: str, *, arrivals: bool = False) -> dict[str, Any]:
    """A running emulator's counters (`arrivals`: every request's arrival time)."""
    url = f"{base_url}/_emulator/stats" + ("?arrivals=1" if arrivals else "")
    data: dict[str, Any] = httpx.get(url, timeout=30).json()
    return data
