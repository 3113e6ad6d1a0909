"""Command-line building blocks shared by every `gpu-image-worker` command
(and by servers that start a worker): option types, the output options, the
Redis URL from flags and environment, and the connector."""

from __future__ import annotations

import argparse
import json
import math
import socket
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..image.limits import Limits
from ..image.outputs import SPEC_V1, OutputSpec, apply_overrides, parse_assignment


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``800000k`` or plain bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    value = float(number) * mult
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"not a size: {text!r}")
    return int(value)


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M)") from None


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def input_formats(text: str) -> tuple[str, ...]:
    from ..image.decode import parse_formats

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Options that change what is made, shared by the worker and `process`."""
    p.add_argument(
        "--input-formats",
        type=input_formats,
        default=Limits.formats,
        metavar="LIST",
        help=f"accept inputs in these formats, comma-separated (default {','.join(Limits.formats)}; "
        "docs/outputs.md); others fail with unsupported-format before any decoder reads them",
    )
    p.add_argument(
        "--max-frames",
        type=positive_int,
        default=Limits.max_frames,
        metavar="N",
        help=f"refuse animations with more frames as too-large (default {Limits.max_frames})",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help='JSON file: {"outputs": {OPERATION: {FIELD: VALUE}}}, the same fields as a '
        "job's params; changes the defaults of output spec v1",
    )
    p.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="OP.FIELD=VALUE",
        help="change one default, e.g. thumbnail.quality=75 or blur.sigma=8 (repeatable; applied after --config)",
    )


def output_spec(args: argparse.Namespace) -> dict[str, OutputSpec]:
    """Output spec v1 with the --config file and --output flags applied."""
    spec = dict(SPEC_V1)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
        if not isinstance(doc, dict) or set(doc) - {"outputs"}:
            raise ValueError(f'--config {args.config}: expected {{"outputs": {{...}}}}')
        spec = apply_overrides(spec, doc.get("outputs", {}), where="outputs")
    for text in args.output:
        spec = apply_overrides(spec, parse_assignment(text), where="--output")
    return spec


def redis_url(addr: str | None, db: int | None, env: Mapping[str, str]) -> str:
    """The connection URL from flags and environment (flags first)."""
    if addr and "://" in addr:
        url = addr
    elif addr:
        url = f"redis://{addr}"
    elif env.get("REDIS_URL"):
        url = env["REDIS_URL"]
    else:
        url = f"redis://{env.get('REDIS_HOST', 'localhost')}:{env.get('REDIS_PORT', '6379')}"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
    if parts.password is None and (env.get("REDIS_PASSWORD") or env.get("REDIS_USERNAME")):
        user = quote(env.get("REDIS_USERNAME", ""), safe="")
        secret = quote(env.get("REDIS_PASSWORD", ""), safe="")
        netloc = f"{user}:{secret}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        url = parts._replace(netloc=netloc).geturl()
    if db is None and env.get("REDIS_DB") and not urlsplit(url).path.strip("/"):
        db = int(env["REDIS_DB"])
    if db is not None:
        url = urlsplit(url)._replace(path=f"/{db}").geturl()
    return url


def describe(url: str) -> str:
    """host:port, DB: n, without credentials, for the start-up line."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"{parts.hostname}:{parts.port or 6379}{tls}, DB: {db}"


def connector(url: str, block_timeout: float) -> Callable[..., redis.Redis]:
    def connect(name: str | None = None) -> redis.Redis:
        # The socket timeout outlasts the blocking read, so a BLMOVE returns
        # before the socket gives up; a dropped connection still ends in time.
        # No retries inside redis-py: a BLMOVE it re-sent after a lost reply
        # would take a second job while the first sat unnoticed in the
        # slot's list. The worker sees every error and knows what to re-read.
        # The name (CLIENT SETNAME, sent again on every reconnect) shows in
        # CLIENT LIST which slot a connection serves.
        return redis.Redis.from_url(
            url,
            client_name=name,
            socket_timeout=block_timeout + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
        )

    return connect


def configuration_problem(conn: redis.Redis) -> str | None:
    """What is wrong with the Redis settings, or None. Outages (refused,
    timed out) are not configuration errors: they are waited out."""
    try:
        conn.ping()
    except redis.AuthenticationError as e:
        return f"Redis refused the credentials: {e}"
    except redis.ResponseError as e:
        return f"Redis refused the connection settings: {e}"
    except (redis.ConnectionError, redis.TimeoutError) as e:
        # A TLS handshake with a server that does not speak TLS fails or
        # times out, as it would with a server that is down: ask in plain text.
        pool = conn.connection_pool
        if issubclass(pool.connection_class, redis.SSLConnection) and _answers_plain_text(
            pool.connection_kwargs.get("host", "localhost"), pool.connection_kwargs.get("port", 6379)
        ):
            return (
                f"TLS connection failed ({e}), and the server answers in plain text: "
                "use a redis:// URL, or enable TLS on the server"
            )
    except redis.RedisError:
        pass
    return None


def _answers_plain_text(host: str, port: int) -> bool:
    """The server at host:port answers a plain-text PING (it does not speak TLS)."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))
    except OSError:
        return False
