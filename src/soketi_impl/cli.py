"""The command line: ``soketi-impl start [--config FILE] [--workers N]`` and ``soketi-impl --version``.

It mirrors soketi's ``soketi start [--config=FILE]``: the configuration comes from the
file and the ``SOKETI_*`` environment variables, over a ``.env`` file in the working
directory (see :mod:`soketi_impl.config`). A bad configuration, a TLS certificate or
key that cannot be loaded included, is reported on one line and the exit code is 2,
before anything starts. SIGINT, SIGTERM and SIGHUP stop the server gracefully (every
connection closed with 4200 over ``SOKETI_SHUTDOWN_GRACE_PERIOD``; exit code 0).
With ``--workers N`` (or ``SOKETI_WORKERS``) above 1 this process supervises N
workers on the one port (:mod:`soketi_impl.workers`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from soketi_impl._version import __version__
from soketi_impl.config import Config, load_config, server_ssl_context
from soketi_impl.config.values import workers_count
from soketi_impl.errors import ConfigError
from soketi_impl.workers import worker_role

__all__ = ["check_mode", "main"]

PROG = "soketi-impl"

#: exit code of a configuration error (and of bad command-line usage, as argparse does)
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A Pusher Channels compatible server, configured like soketi.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    start = commands.add_parser(
        "start",
        help="start the server",
        description=(
            "Start the server. SOKETI_* environment variables (and a .env file in the "
            "working directory) override the config file."
        ),
    )
    start.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help='soketi\'s JSON config file with dotted keys, e.g. {"port": 6001}',
    )
    start.add_argument(
        "--workers",
        metavar="N",
        default=None,
        help=(
            "worker processes on the one port, behaving as one server (default 1, or "
            "SOKETI_WORKERS); 0 or auto: one per CPU core"
        ),
    )
    return parser


def check_mode(config: Config) -> str | None:
    """Check ``SOKETI_MODE`` against ``SOKETI_QUEUE_DRIVER``.

    Raises :class:`ConfigError` for ``worker`` with the ``sync`` driver (nothing to
    process); returns a warning for ``server`` with ``sync`` (webhooks then go out
    from this process, as in ``full``), else ``None``.
    """
    if config.queue_driver == "redis":
        return None
    if config.mode == "worker":
        raise ConfigError(
            "SOKETI_MODE",
            "'full' or 'server' with SOKETI_QUEUE_DRIVER=sync (a worker processes the "
            "Redis queue: set SOKETI_QUEUE_DRIVER=redis)",
            "worker",
        )
    if config.mode == "server":
        return (
            "SOKETI_MODE=server with SOKETI_QUEUE_DRIVER=sync: webhooks wait in this "
            "process's memory and are sent from it; set SOKETI_QUEUE_DRIVER=redis to "
            "leave them to separate workers"
        )
    return None


def _configure_logging(config: Config | None) -> None:
    level = logging.DEBUG if config is not None and config.debug else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the process exit code.

    ``main(["start", "--config", "soketi.json"])`` loads the configuration and runs
    :func:`soketi_impl.server.run` until it returns; ``2`` means a usage or
    configuration error, reported as one line on stderr.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CONFIG)

    # Logging first, so the warnings of the loader (unknown variables ...) are shown.
    _configure_logging(None)
    role = worker_role(os.environ)
    try:
        config = load_config(args.config)
        if args.workers is not None:
            config.workers = workers_count(args.workers, "--workers")
        server_ssl_context(config)  # the server builds it again; here to fail before starting
        mode_warning = check_mode(config)
        if role is None and config.workers > 1 and config.mode == "worker":
            raise ConfigError(
                "SOKETI_WORKERS", "1 with SOKETI_MODE=worker (start several queue workers instead)",
                config.workers,
            )
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(config)
    if mode_warning:
        logging.getLogger("soketi_impl.server").warning("%s", mode_warning)

    # Imported here: the server pulls in the event loop and the transports, which a
    # configuration error (or --version) never needs.
    server = importlib.import_module("soketi_impl.server")

    try:
        if role is None and config.workers > 1:
            supervisor = importlib.import_module("soketi_impl.workers")
            worker_argv = ["start"] + (["--config", args.config] if args.config else [])
            return int(supervisor.supervise(config, config.workers, worker_argv))
        return int(server.run(config) if role is None else server.run(config, role))
    except KeyboardInterrupt:
        return 130
