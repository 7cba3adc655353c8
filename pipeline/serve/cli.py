"""Serve a saved reward model over HTTP.

python -m pipeline.serve --model DIR_OR_HUB_ID [--host 127.0.0.1] [--port 8000] [--devices auto] [--precision fp32]

Checked before the model is loaded: the flags, the API key's environment variable and the address (the socket is
bound first, so a port in use is a one-line error at once). SIGTERM (and Ctrl-C) stop accepting connections, let the
requests in flight finish (up to --shutdown_timeout seconds), then exit: 0 for SIGTERM, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import os
import signal
import socket
import sys
from typing import Any

from pipeline.core.errors import FlagParser, UserError, cli_entry, one_line
from pipeline.model.arguments import ScorerArguments

DEFAULT_KEY_ENV = "Q2_REWARD_API_KEY"
POSITIVE_FLAGS = ("max_length", "max_tokens", "batch_size", "max_pairs", "max_queue_pairs", "max_connections")


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser("python -m pipeline.serve", description="Serve a saved reward model over HTTP.")
    ScorerArguments.add_to(parser, ("model",))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed at start)")
    parser.add_argument(
        "--devices", default="auto", help="comma-separated, one model replica each: cpu, cuda:0,cuda:1 (default: every "
        "CUDA GPU, else the CPU)"
    )  # fmt: skip
    ScorerArguments.add_to(parser, ("precision", "max_length", "max_tokens", "batch_size"))
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="how long an idle replica waits for more")
    parser.add_argument("--max_pairs", type=int, default=4096, help="pairs per request at most (more: 413)")
    parser.add_argument("--max_body_mb", type=float, default=32.0, help="request body size at most (more: 413)")
    parser.add_argument("--max_queue_pairs", type=int, default=16384, help="pairs held at once at most (more: 503)")
    parser.add_argument("--max_connections", type=int, default=1024, help="open connections at most (more: 503)")
    parser.add_argument("--standardize", action="store_true", help="/get_reward returns standardised rewards")
    parser.add_argument(
        "--api_key_env", help=f"environment variable holding the bearer key (default: {DEFAULT_KEY_ENV} when set)"
    )
    parser.add_argument("--shutdown_timeout", type=float, default=60.0, help="seconds in-flight requests may take")
    parser.add_argument("--log_level", choices=("critical", "error", "warning", "info", "debug"), default="info")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    for flag in POSITIVE_FLAGS:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1 (got {value})")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0-65535 (got {args.port})")
    for flag in ("max_wait_ms", "max_body_mb", "shutdown_timeout"):
        value = getattr(args, flag)
        if not value >= 0 or value == float("inf"):
            raise UserError(f"--{flag} must be a number >= 0 (got {value})")
    if args.max_body_mb * 2**20 < 1:
        raise UserError(f"--max_body_mb {args.max_body_mb} is less than a byte")
    if args.max_pairs > args.max_queue_pairs:
        raise UserError(
            f"--max_pairs {args.max_pairs} is more than --max_queue_pairs {args.max_queue_pairs}: such a request "
            "could never be admitted"
        )


def api_key(name: str | None) -> str | None:
    """The bearer key from the environment (its value is never printed): --api_key_env names a variable that must be
    set; without it, Q2_REWARD_API_KEY is used when set."""
    if name is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    value = os.environ.get(name, "")
    if not value.strip():
        raise UserError(f"--api_key_env {name}: the environment variable {name} is not set or empty; set it to the key")
    return value.strip()


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise UserError(f"--host {host}: not an address of this machine ({one_line(err)})") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or --host"
        ) from err
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def load_scorers(args: argparse.Namespace) -> list:
    """One RewardScorer per device in --devices, each with its own copy of the model."""
    import torch

    from pipeline.data.conversation import check_format
    from pipeline.model.loading import check_max_length, default_max_length, load_reward_model
    from pipeline.model.scorer import RewardScorer, resolve_device

    names = [d.strip() for d in args.devices.split(",")]
    if args.devices.strip() == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if not all(names):
        raise UserError(f"--devices {args.devices!r}: an empty entry; give e.g. cpu or cuda:0,cuda:1")
    devices = [resolve_device(name) for name in names]  # a device that is not there is a one-line error
    model, tokenizer = load_reward_model(args.model)
    check_format(model.config, f"--model {args.model}")
    # The server's bound stays the tokenizer's too: it never scores past what the model's tokenizer was saved for.
    check_max_length(args.max_length, default_max_length(model, tokenizer), args.model)
    models = [model] + [copy.deepcopy(model) for _ in devices[1:]]  # copied before the first is moved to its device
    options = {"precision": args.precision, "max_length": args.max_length}
    options.update(max_tokens=args.max_tokens, batch_size=args.batch_size)
    scorers = [RewardScorer(m, tokenizer, device=d, **options) for m, d in zip(models, devices, strict=True)]
    if args.standardize:
        scorers[0].standardize([])  # the model has no reward_mean/reward_std: a one-line error
    return scorers


def _ignore(signum: int, frame: Any) -> None:
    """uvicorn raises the signal it stopped for again once it has stopped; SIGTERM has been handled by then."""


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    key = api_key(args.api_key_env)
    sock = bind(args.host, args.port)
    try:
        serve(args, key, sock)
    finally:
        sock.close()


def serve(args: argparse.Namespace, key: str | None, sock: socket.socket) -> None:
    import uvicorn

    from pipeline.serve.app import Settings, create_app
    from pipeline.serve.batcher import Batcher

    scorers = load_scorers(args)
    batcher = Batcher(scorers, max_queue_pairs=args.max_queue_pairs, max_wait_s=args.max_wait_ms / 1000)
    settings = Settings(
        model=args.model,
        max_pairs=args.max_pairs,
        max_body_bytes=int(args.max_body_mb * 2**20),
        api_key=key,
        standardize_rewards=args.standardize,
    )
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    replicas = ", ".join(f"{s.device} {s.precision}" for s in scorers)
    auth = f"bearer key from ${args.api_key_env or DEFAULT_KEY_ENV}" if key else "no API key"
    print(f"serving {args.model} on {url} ({replicas}; {auth})", file=sys.stderr, flush=True)
    if key is None and not is_loopback(args.host):
        print(
            f"warning: listening on {args.host} without an API key: anyone who can reach this port can use it; set "
            f"{DEFAULT_KEY_ENV} (and put TLS in front)",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        create_app(batcher, settings),
        log_level=args.log_level,
        timeout_graceful_shutdown=args.shutdown_timeout,
        limit_concurrency=args.max_connections,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, _ignore)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise UserError("the server did not start (see the log above)")
