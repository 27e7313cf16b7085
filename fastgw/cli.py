"""`fastgw run | check`: the command line.

Only argument handling lives here; loading is `fastgw.config`, serving is
`fastgw.dataplane.server`, and the multi-process mode is `fastgw.controlplane.supervisor`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, Sequence

from fastgw import __version__
from fastgw.config import ConfigError
from fastgw.config.settings import ENV_PREFIX, SETTING_NAMES

log = logging.getLogger("fastgw")

# Every node setting gets a flag (`--metrics-prefix` for `metrics_prefix`), derived from
# GatewaySettings so that a new setting has one without touching this file.
SETTING_FLAGS: tuple[str, ...] = SETTING_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="A fast Kong-compatible API gateway")
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    # The metavar lists the public commands: argparse prints a SUPPRESSed sub-command's
    # help as "==SUPPRESS==" instead of hiding it.
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,check,config}")

    run = sub.add_parser("run", help="start the gateway")
    run.add_argument("-c", "--config", default="config.json",
                     help="declarative config file (JSON, or YAML when named *.yml/*.yaml)")
    run.add_argument("--log-level", default=os.environ.get("FASTGW_LOG_LEVEL", "info"))
    for name in SETTING_FLAGS:
        run.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE",
                         help=f"node setting {name} (overrides the file and {ENV_PREFIX}"
                              f"{name.upper()})")

    worker = sub.add_parser("worker")  # started by the supervisor; not listed
    worker.add_argument("--ipc-fd", type=int, required=True)
    worker.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    worker.add_argument("--log-level", default="info")

    check = sub.add_parser("check", help="validate a config file and print every error")
    check.add_argument("-c", "--config", default="config.json")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    export = config_sub.add_parser(
        "export", help="write the configuration; --kong: a file Kong loads (what is dropped "
                       "is named on stderr)")
    export.add_argument("-c", "--config", default="config.json")
    export.add_argument("--kong", action="store_true",
                        help="drop fastgw-only settings so that Kong accepts the file")
    export.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    export.add_argument("--format", choices=("json", "yaml"), default=None,
                        help="default: yaml for a *.yml/*.yaml output, else json")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}


def cmd_check(path: str) -> int:
    # Through the store's parser, so files with `workspaces` check like they load.
    from fastgw.controlplane.store import FileConfigStore

    try:
        config = FileConfigStore.open(path, env=os.environ).state.merged
    except ConfigError as exc:
        for field, message in exc.errors:
            print(f"{path}: {field}: {message}" if field else f"{path}: {message}")
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}")
        return 1
    for warning in config.warnings:
        print(f"{path}: warning: {warning}")
    print(
        f"{path}: ok ({len(config.services)} services, {len(config.routes)} routes, "
        f"{len(config.upstreams)} upstreams, {len(config.targets)} targets)"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fastgw.config.kong_export import to_kong
    from fastgw.config.loader import dump_yaml, is_yaml_path
    from fastgw.controlplane.store import FileConfigStore

    try:
        document = FileConfigStore.open(args.config, env={}).state.document()
    except ConfigError as exc:
        for field, message in exc.errors:
            print(f"{args.config}: {field}: {message}" if field else f"{args.config}: {message}",
                  file=sys.stderr)
        return 1
    if args.kong:
        document, dropped = to_kong(document)
        for line in dropped:
            print(f"dropped {line}", file=sys.stderr)
    yaml_out = args.format == "yaml" or (args.format is None and args.output != "-"
                                          and is_yaml_path(args.output))
    import orjson

    data = dump_yaml(document) if yaml_out else \
        orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        with open(args.output, "wb") as f:
            f.write(data)
    return 0


def resolve_workers(value: int | str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return max(1, int(value))


def cmd_run(args: argparse.Namespace) -> int:
    """Open the store (config.json) and run the supervisor with its workers.

    Every worker count, 1 included, is a supervisor plus worker processes; see the
    `fastgw.controlplane.supervisor` docstring for why.
    """
    from fastgw.controlplane.store import FileConfigStore
    from fastgw.controlplane.supervisor import StartupError, Supervisor

    path = args.config
    try:
        store = FileConfigStore.open(path, env=os.environ, overrides=_overrides(args))
    except ConfigError as exc:
        log.error("invalid configuration in %s: %s", path, exc)
        for field, message in exc.errors:
            log.error("  %s: %s", field, message)
        return 1
    for warning in store.state.merged.warnings:
        log.warning("%s", warning)
    settings = store.state.merged.gateway
    supervisor = Supervisor(store, resolve_workers(settings.workers), log_level=args.log_level)
    try:
        return asyncio.run(supervisor.run())
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen: %s (proxy_listen %s, admin_listen %s, status_listen %s)", exc,
                  settings.proxy_listen, settings.admin_listen, settings.status_listen)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "config":
        return cmd_export(args)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    if args.command == "worker":
        from fastgw.dataplane.worker import main as worker_main

        return worker_main(args.ipc_fd, args.heartbeat)
    return cmd_run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
