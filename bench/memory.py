#!/usr/bin/env python3
"""Peak memory of the CLI writing a large body: -o FILE and stdout.

    python3 bench/memory.py [--size-mb 250] [--rounds 3] [OTHER_DPOP_PY ...]

Serves a body of --size-mb MiB from a local DemoServer (in 1 MiB pieces, so
the server itself stays small), runs `python dpop.py ... GET` in a fresh
process for each dpop.py given (this repository's first, then any others,
e.g. an older release: `git show REV:dpop.py > /tmp/old.py`), and reports
the median peak RSS of that process over --rounds runs, next to a baseline
(`dpop.py jwk`, i.e. interpreter + module + key). Standard library only;
Linux/macOS (resource.getrusage). A measurement, not a test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import dpop  # noqa: E402

# Runs argv[1:] as a child and prints the child's peak RSS in KiB (Linux ru_maxrss unit).
PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)\n"
)


def peak_kib(argv):
    env = dict(os.environ, DPOP_CLIENT_SECRET=dpop.DEMO_CLIENT_SECRET)
    out = subprocess.run(
        [sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, env=env, check=True
    )
    kib, status = out.stdout.split()
    if status != "0":
        raise SystemExit("bench: %s exited %s" % (" ".join(argv), status))
    return int(kib)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("others", nargs="*", help="other dpop.py files to measure the same way")
    args = parser.parse_args()
    size = args.size_mb << 20
    piece = bytes(range(256)) * 4096

    def big(handler):
        if handler.path != "/api/big":
            return False
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        for _ in range(size // len(piece)):
            handler.wfile.write(piece)
        return True

    files = [REPO / "dpop.py"] + [Path(p).resolve() for p in args.others]

    class BigServer(dpop.DemoServer):  # the demo, with /api/big answered by big()
        def answer(self, handler):
            if not big(handler):
                super().answer(handler)

    with BigServer() as server, tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "k.pem"
        key.write_text(dpop.generate_key().to_pem())
        out = Path(tmp) / "body.bin"
        print(
            "body %d MiB, %d rounds, median peak RSS of the dpop process (MiB)"
            % (args.size_mb, args.rounds)
        )
        print("%-40s %10s %12s %12s" % ("dpop.py", "baseline", "-o FILE", "stdout"))
        for path in files:
            flow = [
                sys.executable,
                str(path),
                "--key",
                str(key),
                "--token-endpoint",
                server.token_endpoint,
            ]
            flow += ["--client-id", dpop.DEMO_CLIENT_ID, "--scope", "api"]
            cells = []
            for argv in (
                [sys.executable, str(path), "jwk", "--key", str(key)],
                flow + ["-o", str(out), "GET", server.base_url + "/api/big"],
                flow + ["GET", server.base_url + "/api/big"],
            ):
                cells.append(statistics.median(peak_kib(argv) for _ in range(args.rounds)) / 1024)
            if out.stat().st_size != size:
                raise SystemExit(
                    "bench: %s wrote %d bytes, not %d" % (path, out.stat().st_size, size)
                )
            label = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
            print("%-40s %10.1f %12.1f %12.1f" % (label[-40:], *cells))


if __name__ == "__main__":
    main()
