"""Reaching Redis: the connection URL from flags and environment, the
clients every worker slot, tool and server uses (for one server, or for the
primary Sentinel names), the check that tells a configuration error (fail at
once) from an outage (wait it out), and the backoff between attempts."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from . import keys
from .address import CLUSTER_REFUSED, SENTINEL_SCHEMES, parse, unsplit

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# What a server in cluster mode answers to one command on two keys of
# different hash slots: whatever its state, it never runs it.
_CLUSTER_REPLIES = (
    redis.exceptions.ClusterCrossSlotError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
)


def redis_url(addr: str | None, db: int | None, env: Mapping[str, str]) -> str:
    """The connection URL from flags and environment (flags first). The
    credentials in REDIS_USERNAME/REDIS_PASSWORD go into a URL that has none;
    REDIS_SENTINEL_USERNAME/REDIS_SENTINEL_PASSWORD into a Sentinel URL."""
    if addr and "://" in addr:
        url = addr
    elif addr:
        url = f"redis://{addr}"
    elif env.get("REDIS_URL"):
        url = env["REDIS_URL"]
    else:
        url = f"redis://{env.get('REDIS_HOST', 'localhost')}:{env.get('REDIS_PORT', '6379')}"
    parts = urlsplit(url)
    sentinel = parts.scheme.lower() in SENTINEL_SCHEMES
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if ":" not in userinfo and (env.get("REDIS_PASSWORD") or env.get("REDIS_USERNAME")):
        user = quote(env.get("REDIS_USERNAME", ""), safe="")
        secret = quote(env.get("REDIS_PASSWORD", ""), safe="")
        parts = parts._replace(netloc=f"{user}:{secret}@{hosts}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in ("username", "password") if sentinel else ():
        value = env.get(f"REDIS_SENTINEL_{name.upper()}")
        if value and f"sentinel_{name}" not in query:
            query[f"sentinel_{name}"] = value
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme == "unix":  # the path is the socket's: the database is a parameter
        if db is None and env.get("REDIS_DB") and "db" not in query:
            db = int(env["REDIS_DB"])
        if db is not None:
            query["db"] = str(db)
    else:
        if db is None and env.get("REDIS_DB") and len(path) == (1 if sentinel else 0):
            db = int(env["REDIS_DB"])
        if db is not None:
            parts = parts._replace(path="/" + "/".join([*path[:1], str(db)] if sentinel else [str(db)]))
    url = unsplit(parts._replace(query=urlencode(query)))
    parse(url)  # ValueError now, not at the first connection
    return url


def describe(url: str) -> str:
    """Where, which database and what acknowledgement, without credentials, for the start-up line."""
    return parse(url).describe()


class _FailoverAware:
    """A connection that takes the replies only a demoted primary gives for a
    failover: READONLY to a write, UNBLOCKED to a blocked read. It drops
    itself and raises ConnectionError, so that the next attempt connects
    afresh (asking Sentinel, or the name's new address) and every caller
    waits it out like any outage; none takes it for a job's error."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ResponseError as e:
            if isinstance(e, redis.exceptions.ReadOnlyError) or str(e).startswith("UNBLOCKED"):
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.ConnectionError(f"the primary was demoted (a failover): {e}") from e
            raise


class FailoverConnection(_FailoverAware, redis.Connection):
    pass


class FailoverSSLConnection(_FailoverAware, redis.SSLConnection):
    pass


class FailoverSentinelConnection(_FailoverAware, SentinelManagedConnection):
    pass


class FailoverSentinelSSLConnection(_FailoverAware, SentinelManagedSSLConnection):
    pass


def client(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url``: for a Sentinel URL, of the primary
    Sentinel names now and after every failover. ``options`` are redis-py's."""
    address = parse(url)
    if address.sentinels:
        sentinel = Sentinel(address.sentinels, sentinel_kwargs={**address.sentinel, "retry": Retry(NoBackoff(), 0)})
        managed = FailoverSentinelSSLConnection if address.tls else FailoverSentinelConnection
        primary = sentinel.master_for(address.service, connection_class=managed, **{**address.node, **options})
        return cast(redis.Redis, primary)
    if urlsplit(address.url).scheme == "unix":
        return redis.Redis.from_url(address.url, **options)
    connection = FailoverSSLConnection if address.tls else FailoverConnection
    return redis.Redis.from_url(address.url, connection_class=connection, **options)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """The asyncio client of the same Redis (for the upload server's event streams)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    address = parse(url)
    if address.sentinels:
        kwargs = {**address.sentinel, "retry": AsyncRetry(NoBackoff(), 0)}
        primary = AsyncSentinel(address.sentinels, sentinel_kwargs=kwargs).master_for(
            address.service, **{**address.node, **options}
        )
        return cast(aioredis.Redis, primary)
    return aioredis.Redis.from_url(address.url, **options)


def follow_primary(clients: Iterable[redis.Redis]) -> None:
    """Move Sentinel clients still connected to an old primary to the new one.

    A client asks Sentinel only when it connects. A primary demoted while it
    lives (a manual failover, a partition) keeps the connections it has, and
    takes their writes until Sentinel reconfigures it, about 10 s later, when
    they are lost; across a partition, until it heals. Asking once here and
    telling the clients that point elsewhere drops their idle connections at
    once and busy ones when they come back to the pool. Sentinels that do not
    answer change nothing: the connections in place go on serving."""
    pools = [c.connection_pool for c in clients if isinstance(c.connection_pool, SentinelConnectionPool)]
    try:
        if pools:
            primary = pools[0].sentinel_manager.discover_master(pools[0].service_name)
            for pool in pools:
                if pool.master_address not in (None, primary):
                    pool.get_master_address()  # type: ignore[no-untyped-call]
    except redis.RedisError:
        pass


def answers(url: str) -> bool:
    """A Redis answers at ``url`` within half a second (a Sentinel URL: its primary)."""
    conn = client(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
    finally:
        conn.close()


class Connector:
    """Makes the worker's connections to the Redis at ``url``, each named
    (``name``) after the slot it serves; ``acks`` is what the URL asks of
    the replicas (``wait_replicas``, ``wait_timeout_ms``)."""

    def __init__(self, url: str, block_timeout: float) -> None:
        self.url = url
        self.block_timeout = block_timeout
        self.acks = parse(url).acks

    def __call__(self, name: str | None = None) -> redis.Redis:
        # The socket timeout outlasts the blocking read, so a BLMOVE returns
        # before the socket gives up; a dropped connection still ends in time.
        # No retries inside redis-py: a BLMOVE it re-sent after a lost reply
        # would take a second job while the first sat unnoticed in the
        # slot's list. The worker sees every error and knows what to re-read.
        # The name (CLIENT SETNAME, sent again on every reconnect) shows in
        # CLIENT LIST which slot a connection serves.
        return client(
            self.url,
            client_name=name,
            socket_timeout=self.block_timeout + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
        )


def connector(url: str, block_timeout: float) -> Connector:
    return Connector(url, block_timeout)


def configuration_problem(conn: redis.Redis) -> str | None:
    """What is wrong with the Redis settings, or None. Outages (refused,
    timed out, no primary yet) are not configuration errors: they are waited out."""
    pool = conn.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        problem = _sentinel_problem(pool.sentinel_manager, pool.service_name)
        if problem:
            return problem
    try:
        conn.ping()
        conn.exists(keys.JOBS, keys.DONE)
    except _CLUSTER_REPLIES:
        return CLUSTER_REFUSED
    except redis.AuthenticationError as e:
        return f"Redis refused the credentials: {e}"
    except redis.ResponseError as e:
        return f"Redis refused the connection settings: {e}"
    except (redis.ConnectionError, redis.TimeoutError) as e:
        if not isinstance(pool, SentinelConnectionPool):
            kwargs = pool.connection_kwargs
            return _tls_problem(pool.connection_class, kwargs.get("host", "localhost"), kwargs.get("port", 6379), e)
    except redis.RedisError:
        pass
    return None


def _sentinel_problem(sentinel: Sentinel, service: str) -> str | None:
    """Sentinels refusing our credentials or TLS, or none of those that
    answer knowing ``service``; None when one knows it, or none answers."""
    answered = []
    for node in sentinel.sentinels:
        kwargs = node.connection_pool.connection_kwargs
        where = f"{kwargs['host']}:{kwargs['port']}"
        try:
            if node.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service):  # type: ignore[no-untyped-call]
                return None
            answered.append(where)
        except redis.AuthenticationError as e:
            return f"Sentinel {where} refused the credentials (REDIS_SENTINEL_USERNAME, REDIS_SENTINEL_PASSWORD): {e}"
        except redis.ResponseError as e:
            return f"Sentinel {where} refused the request: {e}"
        except (redis.ConnectionError, redis.TimeoutError) as e:
            problem = _tls_problem(node.connection_pool.connection_class, kwargs["host"], kwargs["port"], e)
            if problem:
                return f"Sentinel {where}: {problem}"
    if answered:
        return f"no Sentinel knows a service named {service!r} (asked {', '.join(answered)})"
    return None


def _tls_problem(connection_class: type, host: str, port: int, error: Exception) -> str | None:
    # A TLS handshake with a server that does not speak TLS fails or times
    # out, as it would with a server that is down: ask in plain text.
    if issubclass(connection_class, redis.SSLConnection) and _answers_plain_text(host, port):
        return (
            f"TLS connection failed ({error}), and the server answers in plain text: "
            "use a URL without TLS (redis:// or redis+sentinel://), or enable TLS on the server"
        )
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
