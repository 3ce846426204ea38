"""`lwbatch follow` when the wikis make more revisions than the budget can score.

The emulator's stream makes 600 events a second (enwiki, dewiki and frwiki are 4 in 6
of them, namespace 0 most), and the follower has a budget of 278 requests a second:
the gateway's authenticated 100,000 an hour, compressed 10x, so a 60-second run is ten
minutes of the real thing. The follower should read no faster than it scores: its RSS
stays flat while the lag (event time behind now) grows, and its progress lines say so.
Printed: RSS over the run (a dozen samples), the lag and its trend from each progress
line (every 5 s), the largest RSS of the first and the last quarter, and the budget used.

    python benchmarks/follow.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import emulator_process, emulator_stats

_LAG = re.compile(r"lag ([\d,.]+) s(?: \((\w+)\))?")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--stream-rate", type=float, default=600.0)
    parser.add_argument("--rate", default="278/s")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process("--latency", "0.05", "--stream-rate", str(args.stream_rate)) as url,
    ):
        command = [
            sys.executable, "-m", "lwbatch", "follow", "-m", "{wiki}-damaging",
            "--wiki", "enwiki,dewiki,frwiki", "-o", str(Path(tmp) / "out"),
            "--stream-url", f"{url}/v2/stream/mediawiki.revision-create", "--endpoint", url,
            "--rate", args.rate, "--roll", "5s", "--progress-every", "5",
        ]  # fmt: skip
        before = emulator_stats(url)["requests"]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []

        def read() -> None:
            assert proc.stderr is not None
            lines.extend(proc.stderr)

        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        while (elapsed := time.monotonic() - started) < args.seconds and proc.poll() is None:
            samples.append((elapsed, rss_mb(proc.pid)))
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join()
        requests = emulator_stats(url)["requests"] - before
    rate = float(args.rate.split("/")[0])
    lags = [(float(m.group(1).replace(",", "")), m.group(2)) for m in map(_LAG.search, lines) if m]
    print(f"stream {args.stream_rate:.0f} events/s, budget {args.rate}, {args.seconds:.0f} s")
    print(f"{'second':>7} {'RSS MB':>8}")
    for at, mb in samples[:: max(len(samples) // 12, 1)]:
        print(f"{at:>7.1f} {mb:>8.1f}")
    print("lag from the progress lines:", ", ".join(f"{lag:.1f} s ({t})" for lag, t in lags))
    early = max(mb for at, mb in samples if at <= args.seconds / 4)
    late = max(mb for at, mb in samples if at >= args.seconds * 3 / 4)
    share = requests / (rate * args.seconds)
    print(f"RSS largest in the first quarter {early:.1f} MB, in the last {late:.1f} MB")
    print(f"requests {requests:,} ({share:.1%} of the budget over the run)")
    print(
        json.dumps(
            {
                "benchmark": "follow",
                "stream_events_per_s": args.stream_rate,
                "budget": args.rate,
                "seconds": args.seconds,
                "rss_mb_first_quarter_max": round(early, 1),
                "rss_mb_last_quarter_max": round(late, 1),
                "lags_s": [lag for lag, _ in lags],
                "lag_trends": [t for _, t in lags],
                "requests": requests,
                "share_of_budget": round(share, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
