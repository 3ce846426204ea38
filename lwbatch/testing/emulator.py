"""A local Lift Wing: the real endpoints and answer shapes, deterministic scores.

Scores depend only on (model, rev_id), so a test can know every value in advance.
Faults are injected on request: latency distributions, unknown and deleted
revisions, undeployed models (404), 5xx, connection resets, hung requests, a 401 for
the wrong token, and a gateway budget that answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import subprocess
import sys
import threading
import time
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

from lwbatch.config import Rate
from lwbatch.errors import LWBatchError, UsageError
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog

_MASK64 = (1 << 64) - 1


def unit(model: str, rev_id: int, salt: int = 0) -> float:
    """A deterministic number in [0, 1) for (model, rev_id) (splitmix64)."""
    x = ((zlib.crc32(model.encode()) << 32) ^ rev_id ^ (salt * 0x9E3779B97F4A7C15)) & _MASK64
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((x ^ (x >> 31)) >> 11) / float(1 << 53)


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
    undeployed: frozenset[str] = frozenset()  # model names that answer 404
    error_rate: float = 0.0  # share of requests answered with a 5xx
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    reset_rate: float = 0.0  # share of requests whose connection is cut
    hang_rate: float = 0.0  # share of requests never answered
    budget: Rate | None = None  # the gateway's sliding window; over it: 429
    storm_after: int | None = None  # after this many requests, 429 for storm_seconds
    storm_seconds: float = 1.0
    token: str | None = None  # when set, any other bearer token gets 401
    track_pairs: bool = True  # count answers per (model, rev_id) for tests
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"`{name}` must be between 0 and 1")


@dataclass(slots=True)
class EmulatorStats:
    requests: int = 0
    resets: int = 0  # connections cut on purpose
    hangs: int = 0  # requests never answered on purpose
    by_status: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)  # requests past the gateway
    answered: Counter[tuple[str, int]] = field(default_factory=Counter)  # terminal answers
    arrivals: array[float] = field(default_factory=lambda: array("d"))

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
        self._window: deque[float] = deque()
        self._storm_until: float | None = None
        self._specs: dict[str, ModelSpec | None] = {}
        self.app = web.Application()
        self.app.router.add_post("/v1/models/{target}", self._predict)
        self.app.router.add_get("/_emulator/stats", self._stats)

    # -- answers -------------------------------------------------------------------
    def answer(self, spec: ModelSpec, rev_id: int, lang: str) -> dict[str, Any]:
        """The 200 body for one revision, exactly as the real model server shapes it."""
        name = spec.name
        family = spec.family
        if family.answer == "revscoring":
            assert spec.wiki is not None and spec.kind is not None
            probability = self._probabilities(spec, rev_id)
            if family.prediction == "bool":
                prediction: Any = probability["true"] > 0.5
            elif family.prediction == "list":
                prediction = [label for label, p in probability.items() if p > 0.5]
            else:
                prediction = max(probability, key=lambda label: probability[label])
            return {
                spec.wiki: {
                    "models": {spec.kind: {"version": "0.5.1"}},
                    "scores": {
                        str(rev_id): {
                            spec.kind: {
                                "score": {"prediction": prediction, "probability": probability}
                            }
                        }
                    },
                }
            }
        base: dict[str, Any] = {"model_name": name, "model_version": "3"}
        if spec.needs_lang:
            base["wiki_db"] = f"{lang}wiki"
        base["revision_id"] = rev_id
        if family.answer == "revertrisk":
            p_true = round(unit(name, rev_id), 4)
            base["output"] = {
                "prediction": p_true > 0.5,
                "probabilities": {"true": p_true, "false": round(1 - p_true, 4)},
            }
            return base
        score = round(unit(name, rev_id), 4)
        path = family.score_field
        target = base
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = score
        if name == "readability":
            target["fk_score_proxy"] = round(20 * unit(name, rev_id, 1), 2)
        return base

    def _probabilities(self, spec: ModelSpec, rev_id: int) -> dict[str, float]:
        labels = spec.family.labels
        if spec.family.prediction == "bool":
            p_true = round(unit(spec.name, rev_id), 4)
            return {"false": round(1 - p_true, 4), "true": p_true}
        if spec.family.prediction == "list":
            return {
                label: round(unit(spec.name, rev_id, i + 1), 4) for i, label in enumerate(labels)
            }
        weights = [unit(spec.name, rev_id, i + 1) + 1e-9 for i in range(len(labels))]
        total = sum(weights)
        return {label: round(w / total, 4) for label, w in zip(labels, weights, strict=True)}

    def _missing(self, rev_id: int) -> str | None:
        if rev_id > self.config.max_rev_id or rev_id in self.config.missing:
            return "missing"
        if rev_id in self.config.deleted:
            return "deleted"
        return None

    # -- HTTP ------------------------------------------------------------------------
    async def _stats(self, request: web.Request) -> web.Response:
        data = self.stats.to_dict()
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
        if cfg.token is not None and request.headers.get("Authorization") != f"Bearer {cfg.token}":
            return web.Response(status=401, text="Unauthorized")
        if (
            cfg.storm_after is not None
            and self._storm_until is None
            and self.stats.requests > cfg.storm_after
        ):
            self._storm_until = now + cfg.storm_seconds
        if self._storm_until is not None and now < self._storm_until:
            return _too_many(self._storm_until - now)
        if cfg.budget is not None:
            window = self._window
            while window and window[0] <= now - cfg.budget.period:
                window.popleft()
            if len(window) >= cfg.budget.requests:
                return _too_many(window[0] + cfg.budget.period - now)
            window.append(now)
        return None

    async def _serve(self, request: web.Request) -> web.Response | None:
        cfg = self.config
        target = request.match_info["target"]
        model = target.removesuffix(":predict")
        self.stats.by_model[model] += 1
        spec = self._spec(model)
        if not target.endswith(":predict") or spec is None or model in cfg.undeployed:
            return web.json_response({"httpCode": 404, "httpReason": "Not Found"}, status=404)
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "error", "Request body is not valid JSON.")
        instances, problem = self._instances(spec, data)
        if problem is not None:
            return _error(400, "error" if spec.family.answer == "revscoring" else "detail", problem)
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
            status = self._rng.choice(cfg.error_statuses)
            return _error(
                status,
                "error",
                f"An error happened while fetching feature values from the MediaWiki API "
                f"(emulated {status}).",
            )
        return self._score(spec, instances, batched="instances" in data)

    def _spec(self, model: str) -> ModelSpec | None:
        if model not in self._specs:
            try:
                self._specs[model] = self.catalog.resolve(model)
            except LWBatchError:
                self._specs[model] = None
        return self._specs[model]

    def _instances(self, spec: ModelSpec, data: Any) -> tuple[list[tuple[int, str]], str | None]:
        if not isinstance(data, dict):
            return [], "Expected a JSON object."
        items = data.get("instances") if "instances" in data else [data]
        if not isinstance(items, list) or not items:
            return [], 'Expected "instances" to be a non-empty list.'
        if len(items) > 1 and len(items) > spec.max_batch:
            return [], f"At most {spec.max_batch} instances are allowed per request."
        out: list[tuple[int, str]] = []
        for item in items:
            rev_id = item.get("rev_id") if isinstance(item, dict) else None
            if not isinstance(rev_id, int) or isinstance(rev_id, bool):
                return [], 'Expected "rev_id" to be an integer.'
            lang = item.get("lang", "")
            if spec.needs_lang and not (isinstance(lang, str) and lang):
                return [], 'Expected "lang" to be a language code such as "en".'
            out.append((rev_id, lang))
        if len({lang for _, lang in out}) > 1:
            return [], "All instances in a batch must have the same lang."
        return out, None

    def _score(
        self, spec: ModelSpec, instances: list[tuple[int, str]], *, batched: bool
    ) -> web.Response:
        track = self.config.track_pairs
        for rev_id, _ in instances:
            if track:
                self.stats.answered[(spec.name, rev_id)] += 1
        if len(instances) > 1 or spec.family.answer == "revertrisk":
            return self._revertrisk(spec, instances, batched=batched)
        rev_id, lang = instances[0]
        problem = self._missing(rev_id)
        if problem == "missing":
            return _error(
                400,
                "error",
                f"The MW API does not have any info related to the rev-id provided as input "
                f"({rev_id}), therefore it is not possible to extract features properly. "
                "One of the cause can be a deleted page.",
            )
        if problem == "deleted":
            return _error(
                400,
                "error",
                f"Missing resource for rev-id {rev_id}: TextDeleted: "
                "Text deleted (the revision text was suppressed)",
            )
        return _json(200, self.answer(spec, rev_id, lang))

    def _revertrisk(
        self, spec: ModelSpec, instances: list[tuple[int, str]], *, batched: bool
    ) -> web.Response:
        predictions: list[dict[str, Any]] = []
        errors: list[str] = []
        for rev_id, lang in instances:
            problem = self._missing(rev_id)
            if problem is None:
                predictions.append(self.answer(spec, rev_id, lang))
            else:
                reason = "revision not found" if problem == "missing" else "TextDeleted"
                errors.append(
                    f"Could not make prediction for revision {rev_id} ({lang or 'wikidata'}). "
                    f"Reason: {reason}"
                )
        if not predictions:
            return _error(422, "detail", errors[0] if len(errors) == 1 else "; ".join(errors))
        if not batched:
            # The batch server answers `instances` with a list, even a list of one.
            return _json(200, predictions[0])
        body: dict[str, Any] = {"predictions": predictions}
        if errors:
            body["errors"] = errors
        return _json(200, body)


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, key: str, message: str) -> web.Response:
    return _json(status, {key: message})


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
