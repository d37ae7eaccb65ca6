"""``python -m vastkit.emulator``: run the Vast emulator standalone on loopback HTTP."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from vastkit.emulator._emulator import Emulator
from vastkit.emulator._model import Timings


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until interrupted, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m vastkit.emulator",
        description="A local Vast.ai marketplace that speaks the real REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (8765; 0 for a free one)")
    parser.add_argument("--seed", type=int, default=0, help="catalog and randomness seed")
    parser.add_argument("--offers", type=int, default=2000, help="catalog size (2000)")
    parser.add_argument("--speed", type=float, default=None, help="run time N times faster")
    parser.add_argument("--credit", type=float, default=100.0, help="starting credit in $")
    parser.add_argument("--api-key", default=None, help="the account key (default: from seed)")
    parser.add_argument(
        "--runner",
        choices=("scripted", "process"),
        default="process",
        help="run onstart scripts as local processes (process, default) or not (scripted)",
    )
    parser.add_argument("--no-rate-limits", action="store_true", help="turn rate limits off")
    parser.add_argument("--provision-s", type=float, default=10.0, help="create -> loading")
    parser.add_argument("--loading-s", type=float, default=30.0, help="loading -> running")
    parser.add_argument(
        "--preemption-mtbp-s",
        type=float,
        default=None,
        help="mean seconds between random preemptions of bid instances",
    )
    args = parser.parse_args(argv)
    emulator = Emulator(
        args.seed,
        offers=args.offers,
        speed=args.speed,
        credit=args.credit,
        api_key=args.api_key,
        runner=args.runner,
        rate_limits=not args.no_rate_limits,
        timings=Timings(provision_s=args.provision_s, loading_s=args.loading_s),
        preemption_mtbp_s=args.preemption_mtbp_s,
    )
    with emulator:
        emulator.serve(args.host, args.port)
        print(f"Vast emulator listening on {emulator.url}", flush=True)
        print(f"API key: {emulator.api_key}", flush=True)
        print(f"Try: VAST_URL={emulator.url} VAST_API_KEY=<key> vastai search offers", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
