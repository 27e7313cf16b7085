"""The README's first command: two emulated IRIS backends and the gateway on config.json.

    python -m bench.demo [-c config.json]

Starts the IRIS emulator as instance A on 127.0.0.1:52773 and B on 127.0.0.1:52774 (the
targets of the shipped config.json), then runs `fastgw run -c config.json` in the
foreground. Ctrl-C (or SIGTERM) stops the gateway, then both backends.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from tests.support.procs import REPO_ROOT, IrisProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=str(REPO_ROOT / "config.json"))
    parser.add_argument("--ports", default="52773,52774", help="emulator ports (A,B)")
    args, rest = parser.parse_known_args()
    ports = [int(p) for p in args.ports.split(",")]
    # Ctrl-C stops all three even when started from a script or in the background, where
    # the shell starts us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    backends = [IrisProcess(chr(ord("A") + i), port=port) for i, port in enumerate(ports)]
    gateway: subprocess.Popen[bytes] | None = None
    try:
        for backend in backends:
            backend.start()
            print(f"IRIS emulator {backend.id} on {backend.url}", flush=True)
        gateway = subprocess.Popen([sys.executable, "-m", "fastgw", "run", "-c", args.config, *rest])
        signal.signal(signal.SIGTERM, lambda *_: gateway.terminate() if gateway else None)
        print("gateway starting; try: curl http://localhost:8000/api/atelier/", flush=True)
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for backend in backends:
            backend.stop()


if __name__ == "__main__":
    sys.exit(main())
