"""Run the mock as a process: ``python -m integration.mocks --port 8001``.

Serves every default behaviour (OpenAI, Azure, Anthropic, Gemini, moderation,
guard webhooks) until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .server import MockServer


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m integration.mocks", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    ap.add_argument("--chunk-delay-ms", type=float, default=5.0, help="sleep between streamed chunks")
    args = ap.parse_args(argv)

    server = MockServer(args.host, args.port, log=not args.quiet, chunk_delay_s=args.chunk_delay_ms / 1000)
    # SIGTERM (docker stop, make run's trap) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"aigate mock listening on http://{server.address}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
