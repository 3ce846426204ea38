"""Under a tight budget, are results complete per revision rather than model by model?

Three models, and a budget that covers about a third of the work inside the measured
span. When the span ends, lwbatch has to have scored (nearly) the same revisions with
every model: a researcher who stops a run, or whose budget runs out, then holds
complete rows. Compared in one run with the same budget and span:

  lwbatch          one Scorer fanning each revision out to every model
  model by model   one model over all revisions, then the next (a loop per model)

    python benchmarks/fairness.py --rate 100/s --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence

import anyio
from _common import emulator_process

from lwbatch import Budget, Endpoint, Rate, RowKey, Scorer
from lwbatch.results import Score
from lwbatch.settings import Connection, Hooks, Pacing

MODELS = ["enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic"]


async def score_until(
    models: Sequence[str], revisions: range, url: str, budget: Budget, deadline: float
) -> dict[str, set[int]]:
    """Answers per model collected before `deadline`, with in-flight requests let finish."""
    answered: dict[str, set[int]] = {m: set() for m in models}

    def on_answer(model: str, scores: list[tuple[RowKey, Score]]) -> None:
        if time.monotonic() <= deadline:
            answered[model].update(key.rev_id for key, score in scores if score.error is None)

    async with Scorer(
        models,
        rate=budget,
        connection=Connection(endpoint=Endpoint(base_url=url)),
        hooks=Hooks(on_answer=on_answer),
        pacing=Pacing(gc_control=True),
    ) as scorer:
        with anyio.move_on_after(max(deadline - time.monotonic(), 0)):
            async for _row in scorer.score(revisions):
                pass
        await scorer.stop(grace=0)
    return answered


async def model_by_model(
    revisions: range, url: str, budget: Budget, deadline: float
) -> dict[str, set[int]]:
    answered: dict[str, set[int]] = {}
    for model in MODELS:
        answered |= await score_until([model], revisions, url, budget, deadline)
    return answered


def summarise(answered: dict[str, set[int]], requests: int) -> dict[str, object]:
    complete = set.intersection(*answered.values())
    touched = set.union(*answered.values())
    return {
        "scored_per_model": {m: len(revs) for m, revs in answered.items()},
        "revisions_touched": len(touched),
        "complete_rows": len(complete),
        "complete_share_of_touched": round(len(complete) / len(touched), 4) if touched else 0.0,
        "budget_requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", default="100/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency", default="liftwing")
    args = parser.parse_args()
    rate = Rate.parse(args.rate)
    budget = Budget.from_rate(rate)
    allowed = int(rate.per_second * args.seconds)
    # Work is three times the budget: two revscoring requests per revision plus
    # revertrisk batches of 20 make 2.05 requests per revision.
    revisions = range(1, int(3 * allowed / 2.05) + 1)
    with emulator_process("--latency", args.latency) as url:
        fanned = asyncio.run(
            score_until(MODELS, revisions, url, budget, time.monotonic() + args.seconds)
        )
    with emulator_process("--latency", args.latency) as url:
        looped = asyncio.run(
            model_by_model(revisions, url, budget, time.monotonic() + args.seconds)
        )
    results = {
        "benchmark": "fairness",
        "rate": str(rate),
        "seconds": args.seconds,
        "revisions": len(revisions),
        "lwbatch": summarise(fanned, allowed),
        "model_by_model": summarise(looped, allowed),
    }
    print(
        f"{len(revisions):,} revisions x {len(MODELS)} models, budget {rate} for "
        f"{args.seconds:g} s ({allowed:,} requests, about a third of the work)"
    )
    header = " ".join(f"{m.split('-')[-1][:10]:>10}" for m in MODELS)
    print(f"{'strategy':<16} {header} {'complete rows':>14} {'of touched':>11}")
    for name in ("lwbatch", "model_by_model"):
        row = results[name]
        assert isinstance(row, dict)
        counts = " ".join(f"{row['scored_per_model'][m]:>10,}" for m in MODELS)
        print(
            f"{name:<16} {counts} {row['complete_rows']:>14,} "
            f"{row['complete_share_of_touched']:>11.1%}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
