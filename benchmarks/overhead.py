"""How much CPU does lwbatch spend per request, next to the bare HTTP stacks it could use?

The budget is off and the emulator (its own process) answers at once, so the client's
CPU is the only limit. Each client runs as a whole process of its own, startup included,
sending the same requests with the same number in flight; its CPU time (user + system)
comes from the kernel (wait4). Compared in one run:

  lwbatch             `lwbatch score` end to end: Parquet in, journal, Parquet out
  httpx+aiohttp       a bare loop over the stack lwbatch uses: httpx on httpx-aiohttp
  aiohttp             a bare aiohttp loop
  httpx (default)     httpx with its own transport (httpcore)

    python benchmarks/overhead.py --requests 20000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

MODEL = "enwiki-damaging"
CLIENTS = ("lwbatch", "httpx+aiohttp", "aiohttp", "httpx (default)")


# -- the bare loops, run in a child process ------------------------------------------
async def _bare(client: str, url: str, requests: int, concurrency: int) -> None:
    import orjson

    endpoint = f"{url}/v1/models/{MODEL}:predict"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for rev_id in range(1, requests + 1):
        queue.put_nowait(rev_id)

    if client == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker_aiohttp() -> None:
                while not queue.empty():
                    body = orjson.dumps({"rev_id": queue.get_nowait()})
                    async with session.post(
                        endpoint, data=body, headers={"Content-Type": "application/json"}
                    ) as response:
                        orjson.loads(await response.read())

            await asyncio.gather(*(worker_aiohttp() for _ in range(concurrency)))
        return

    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: httpx.AsyncBaseTransport
    if client == "httpx+aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, limits=limits) as http:

        async def worker_httpx() -> None:
            while not queue.empty():
                body = orjson.dumps({"rev_id": queue.get_nowait()})
                response = await http.post(
                    endpoint, content=body, headers={"Content-Type": "application/json"}
                )
                orjson.loads(response.content)

        await asyncio.gather(*(worker_httpx() for _ in range(concurrency)))


# -- the parent: run each client as a process and read its CPU time -------------------
def run_client(
    client: str, url: str, requests: int, concurrency: int, tmp: Path
) -> dict[str, float]:
    # Imported here, not at the top: a bare loop's process loads only what it uses.
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _common import emulator_stats, run_measured

    if client == "lwbatch":
        inp = tmp / "in.parquet"
        pq.write_table(pa.table({"rev_id": pa.array(range(1, requests + 1), pa.int64())}), inp)
        command = [
            sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(tmp / "out.parquet"),
            "-m", MODEL, "--base-url", url, "--rate", "unlimited",
            "--concurrency", str(concurrency), "--restart", "-q",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, __file__, "--child", client, "--url", url,
            "--requests", str(requests), "--concurrency", str(concurrency),
        ]  # fmt: skip
    before = emulator_stats(url)["requests"]
    measured = run_measured(command)
    sent = emulator_stats(url)["requests"] - before
    if sent != requests:
        raise RuntimeError(f"{client} sent {sent} requests, expected {requests}")
    return {
        "requests": sent,
        "seconds": round(measured["seconds"], 3),
        "req_per_s": round(sent / measured["seconds"], 1),
        "cpu_us_per_req": round(measured["cpu_seconds"] / sent * 1e6, 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--child", choices=CLIENTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_bare(args.child, args.url, args.requests, args.concurrency))
        return

    from _common import emulator_process

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        for client in CLIENTS:
            results[client] = run_client(client, url, args.requests, args.concurrency, Path(tmp))
    lw, bare, baseline = results["lwbatch"], results["httpx+aiohttp"], results["aiohttp"]
    summary = {
        "benchmark": "overhead",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "clients": results,
        "baseline": "aiohttp",
        # Targets: at least 0.5 of the bare aiohttp loop's req/s, at most 2x its CPU.
        "lwbatch_req_per_s_vs_aiohttp": round(lw["req_per_s"] / baseline["req_per_s"], 3),
        "lwbatch_cpu_per_req_vs_aiohttp": round(
            lw["cpu_us_per_req"] / baseline["cpu_us_per_req"], 3
        ),
        "lwbatch_share_of_bare_stack": round(lw["req_per_s"] / bare["req_per_s"], 3),
        "stack_speedup_over_httpx_default": round(
            bare["req_per_s"] / results["httpx (default)"]["req_per_s"], 2
        ),
    }
    print(
        f"{args.requests:,} requests per client, {args.concurrency} in flight, "
        "emulator answering at once (its own process); whole processes, startup included"
    )
    print(
        f"{'client':<18} {'req/s':>9} {'CPU us/req':>11} {'req/s vs aiohttp':>17} "
        f"{'CPU vs aiohttp':>15} {'RSS MB':>7}"
    )
    for client, row in results.items():
        print(
            f"{client:<18} {row['req_per_s']:>9,.0f} {row['cpu_us_per_req']:>11,.0f} "
            f"{row['req_per_s'] / baseline['req_per_s']:>17.2f} "
            f"{row['cpu_us_per_req'] / baseline['cpu_us_per_req']:>15.2f} "
            f"{row['peak_rss_mb']:>7.0f}"
        )
    print("baseline: the bare aiohttp loop (target: lwbatch >= 0.50 of its req/s, <= 2x its CPU)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
