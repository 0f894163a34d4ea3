"""``nomad-bulk serve``: run the local NOMAD-compatible server for offline rehearsal."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_USAGE

HELP = "run a local NOMAD-compatible API server (offline rehearsal and tests)"

_PASSWORD_ENV = "NOMAD_BULK_SERVE_PASSWORD"  # noqa: S105 - the name of an env var


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the serve options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD[:EMAIL]",
        help="an extra account (repeatable; added to the default test users). A PASSWORD of "
        f"'-' is read from ${_PASSWORD_ENV} so it stays out of the process list",
    )
    parser.add_argument(
        "--processing-time", type=float, default=0.5, help="seconds per processing (default 0.5)"
    )
    parser.add_argument(
        "--time-per-entry", type=float, default=0.0, help="extra seconds per entry (default 0)"
    )
    parser.add_argument(
        "--upload-limit", type=int, default=10, help="unpublished uploads per user (default 10)"
    )
    parser.add_argument("--api-version", choices=("1.3", "2.0"), default="1.3")
    parser.add_argument("--prefix", default="/api/v1", help="API path prefix (default /api/v1)")
    parser.add_argument(
        "--token-lifetime", type=float, default=3600.0, help="login token lifetime in seconds"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep state here so it survives restarts"
    )
    parser.add_argument(
        "--faults", default=None, metavar="SPEC", help="fault plan as JSON or @file.json"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for fault injection")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (the server has test credentials!)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Start the server, print its URL and users, and serve until SIGINT/SIGTERM."""
    from ..server import DEFAULT_USERS, FaultPlan, ServerConfig, UserSpec

    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"nomad-bulk serve: refusing to bind non-loopback host {args.host!r}; the server "
            "accepts well-known test passwords. Pass --allow-remote to do it anyway.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    users = {u.username: u for u in DEFAULT_USERS}
    for raw in args.user:
        name, sep, rest = raw.partition(":")
        password, _, email = rest.partition(":")
        if password == "-":  # noqa: S105 - the "read it from the environment" marker
            password = os.environ.get(_PASSWORD_ENV, "")
        if not name or not sep or not password:
            print(
                "nomad-bulk serve: --user needs NAME:PASSWORD[:EMAIL] "
                f"(or NAME:- with ${_PASSWORD_ENV} set)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        users[name] = UserSpec(name, password, email or None)
    try:
        faults = FaultPlan.from_spec(args.faults) if args.faults else FaultPlan()
        config = ServerConfig(
            api_version=args.api_version,
            prefix=args.prefix.rstrip("/"),
            users=tuple(users.values()),
            token_lifetime=args.token_lifetime,
            upload_limit=args.upload_limit,
            processing_time=args.processing_time,
            time_per_entry=args.time_per_entry,
            data_dir=args.data_dir,
            faults=faults,
            seed=args.seed,
        )
    except (OSError, ValueError, TypeError) as exc:
        print(f"nomad-bulk serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    asyncio.run(_serve(config, args.host, args.port))
    return EXIT_OK


async def _serve(config: object, host: str, port: int) -> None:
    from ..server import LocalServer, ServerConfig

    assert isinstance(config, ServerConfig)  # noqa: S101 - narrowing for the type checker
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = LocalServer(config, host=host, port=port)
    await server.start()
    try:
        print(f"NOMAD API at {server.url}", flush=True)
        names = ", ".join(u.username for u in config.users)
        print(f"Users: {names} (NOMAD {config.api_version} semantics)", flush=True)
        await stop.wait()
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
