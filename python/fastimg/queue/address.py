"""Where Redis is: a URL taken apart into what redis-py needs, for one
server (``redis://``, ``rediss://``, ``unix://``) or for the primary that
Sentinel names (``redis+sentinel://``, ``rediss+sentinel://``), and how many
replicas must acknowledge a write before it counts.

    redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?params]

The user and password in the URL are the data nodes'; the Sentinels' are the
parameters ``sentinel_username`` and ``sentinel_password`` (or the
environment, see ``connect.redis_url``). ``rediss+sentinel://`` speaks TLS to
both, with redis-py's ``ssl_*`` parameters applying to both. Any URL may carry
``wait_replicas=N`` and ``wait_timeout_ms=T``: see :class:`Acks`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.connection import parse_url as _untyped_parse_url


def parse_url(url: str) -> dict[str, Any]:
    """redis-py's reading of a URL into connection settings."""
    return cast(dict[str, Any], _untyped_parse_url(url))  # type: ignore[no-untyped-call]


SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
# A Sentinel answers at once or is passed over for the next one: its
# timeouts are short whatever the data nodes' are.
SENTINEL_TIMEOUT_S = 1.0
OUR_PARAMS = ("wait_replicas", "wait_timeout_ms", "sentinel_username", "sentinel_password")

CLUSTER_REFUSED = (
    "Redis Cluster is not supported: the queue's Lua scripts move a job between several keys "
    "(image:jobs, a slot's in-flight list, image:done, ...) in one step, which a cluster allows only "
    "for keys in one hash slot. Use one primary with replicas, and Sentinel for failover (docs/operations.md)"
)


@dataclass(frozen=True)
class Acks:
    """How many replicas must acknowledge a write (Redis WAIT) before it
    counts, and how long to wait for them. 0 replicas: a write counts once
    the primary has it (Redis's default, asynchronous replication)."""

    replicas: int = 0
    timeout_ms: int = 1000

    def describe(self) -> str:
        if not self.replicas:
            return ""
        return f", writes acknowledged by {self.replicas} replica(s) within {self.timeout_ms} ms"


class NotAcknowledged(redis.ConnectionError):
    """Fewer replicas than asked acknowledged a write in time. A connection
    error to its callers: the write may be lost in a failover, so it is
    waited out and tried again like an outage."""


def acknowledged(acks: Acks, replicas: int) -> None:
    """Raise NotAcknowledged unless ``replicas`` (WAIT's answer) is enough."""
    if replicas < acks.replicas:
        raise NotAcknowledged(
            f"the write reached {replicas} of the {acks.replicas} replica(s) asked for within {acks.timeout_ms} ms"
        )


@dataclass(frozen=True)
class Address:
    url: str  # for one server: the URL as redis-py reads it (without our parameters)
    acks: Acks = Acks()
    sentinels: tuple[tuple[str, int], ...] = ()  # empty for one server
    service: str = ""
    node: dict[str, Any] = field(default_factory=dict)  # connection settings of the data nodes
    sentinel: dict[str, Any] = field(default_factory=dict)  # connection settings of the Sentinels
    tls: bool = False
    db: int = 0

    def describe(self) -> str:
        """For log lines: no credentials."""
        tls = " (TLS)" if self.tls else ""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            where = f"Sentinel {hosts}, service {self.service}{tls}"
        else:
            parts = urlsplit(self.url)
            where = f"{parts.path}{tls}" if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}{tls}"
        return f"{where}, DB: {self.db}{self.acks.describe()}"


def parse(url: str) -> Address:
    """``url`` taken apart; ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis+cluster", "rediss+cluster"):
        raise ValueError(CLUSTER_REFUSED)
    if scheme not in PLAIN_SCHEMES and scheme not in SENTINEL_SCHEMES:
        known = ", ".join((*PLAIN_SCHEMES, *SENTINEL_SCHEMES))
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} ({known})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_PARAMS}
    rest = urlencode([(k, v) for k, v in query if k not in OUR_PARAMS])
    acks = Acks(_number(ours, "wait_replicas", 0), _number(ours, "wait_timeout_ms", Acks.timeout_ms, least=1))
    if scheme in PLAIN_SCHEMES:
        if "sentinel_username" in ours or "sentinel_password" in ours:
            raise ValueError("sentinel_username and sentinel_password belong to a redis+sentinel:// URL")
        plain = unsplit(parts._replace(query=rest))
        kwargs = parse_url(plain)  # raises ValueError on what redis-py cannot read
        return Address(plain, acks, tls=scheme == "rediss", db=int(kwargs.get("db", 0)))
    return _sentinel_address(parts.netloc, parts.path, SENTINEL_SCHEMES[scheme], rest, ours, acks)


def unsplit(parts: SplitResult) -> str:
    """The URL again (urllib's own drops the ``//`` of ``unix:///path``)."""
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _sentinel_address(netloc: str, path: str, node_scheme: str, rest: str, ours: dict[str, str], acks: Acks) -> Address:
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    names = [unquote(p) for p in path.strip("/").split("/") if p]
    if not names or len(names) > 2:
        raise ValueError("a redis+sentinel:// URL ends in /service_name or /service_name/db")
    try:
        db = int(names[1]) if len(names) > 1 else 0
    except ValueError:
        raise ValueError(f"database {names[1]!r} is not a number") from None
    # redis-py reads the data nodes' settings from a URL of one server: the
    # same user, password, database and parameters, any host.
    node = parse_url(f"{node_scheme}://{userinfo + '@' if userinfo else ''}sentinel-primary/{db}?{rest}")
    for key in ("host", "port", "connection_class"):
        node.pop(key, None)
    sentinel: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
    }
    if "sentinel_username" in ours:
        sentinel["username"] = ours["sentinel_username"]
    if "sentinel_password" in ours:
        sentinel["password"] = ours["sentinel_password"]
    tls = node_scheme == "rediss"
    if tls:
        sentinel["ssl"] = True
        sentinel.update({k: v for k, v in node.items() if k.startswith("ssl_")})
    return Address("", acks, sentinels, names[0], node, sentinel, tls, db)


def _host_port(text: str) -> tuple[str, int]:
    if not text:
        raise ValueError("a redis+sentinel:// URL names no Sentinel, or an empty one between commas")
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    try:
        return unquote(host), int(port) if port else SENTINEL_PORT
    except ValueError:
        raise ValueError(f"Sentinel port {port!r} is not a number") from None


def _number(params: dict[str, str], name: str, default: int, least: int = 0) -> int:
    if name not in params:
        return default
    try:
        value = int(params[name])
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(f"{name} must be a whole number, at least {least}")
    return value
