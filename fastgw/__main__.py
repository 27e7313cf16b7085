"""``python -m fastgw`` and the ``fastgw`` command.

Signals first: ``fastgw run`` blocks SIGHUP, SIGTERM and SIGINT before it imports anything
(importing the CLI and opening a large config take a second), and the supervisor handles
them once its loop runs (``Supervisor.run`` unblocks them; one that came meanwhile is
handled then). Without this, a SIGHUP from a config tool racing a restart killed the
supervisor during start-up. A worker ignores SIGHUP from its first instruction (the
supervisor reloads and pushes); its SIGTERM drain handler comes with its event loop.
"""

import signal
import sys

SUPERVISOR_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "run":
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    elif command == "worker":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from fastgw.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
