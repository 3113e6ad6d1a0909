"""Reaching Redis: the connection URL from flags and environment, the
connector every worker slot and tool uses, and the check that tells a
configuration error (fail at once) from an outage (wait it out), and the
backoff between attempts."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


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


def answers(url: str) -> bool:
    """A Redis answers at ``url`` within half a second."""
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


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


class Backoff:
    """Delay between attempts to reach Redis: 0.1 s doubling to 10 s, with jitter."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self) -> float:
        self.delay = min(10.0, max(0.1, self.delay * 2))
        return self.delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.delay = 0.0
