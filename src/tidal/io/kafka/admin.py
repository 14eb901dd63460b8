"""Topics, offsets and consumer groups of a Kafka cluster, over confluent-kafka's AdminClient.

:class:`KafkaAdmin` is what ``tidal kafka topics|create|describe`` and the test fixtures use:
a few blocking calls with timeouts, every confluent-kafka error translated into a
:class:`~tidal.errors.ConnectorError` that says which cluster and what failed. A cluster
that does not answer gives one message naming the address it tried and how to start one.

librdkafka's own log lines (``Connect to ipv4#127.0.0.1:9092 failed ...``) go to the Python
logger ``tidal.kafka.librdkafka`` instead of standard error: configure logging to see them.

Example (not run here: it needs a broker)::

    admin = KafkaAdmin(KafkaConfig(bootstrap_servers="127.0.0.1:9092"))
    admin.create_topic("clicks", partitions=3)
    admin.describe("clicks").partitions[0].end     # next offset of partition 0
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from tidal.errors import ConnectorError
from tidal.io.kafka.config import KafkaConfig

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = [
    "GroupLag",
    "KafkaAdmin",
    "PartitionInfo",
    "TopicInfo",
    "client_settings",
    "require_kafka",
]

LOGGER = logging.getLogger("tidal.kafka.librdkafka")
LOGGER.addHandler(logging.NullHandler())  # quiet unless the application configures logging


def require_kafka() -> None:
    """Check that confluent-kafka is installed.

    Raises:
        ImportError: it is not; the message names the install command.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        msg = "Kafka needs confluent-kafka: pip install 'tidal-stream[kafka]'"
        raise ImportError(msg) from exc


def client_settings(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """``config.client(**overrides)`` with librdkafka's log sent to :data:`LOGGER`.

    Example:
        >>> s = client_settings(KafkaConfig(bootstrap_servers="h:1"), **{"client.id": "x"})
        >>> s["bootstrap.servers"], s["client.id"], s["logger"].name
        ('h:1', 'x', 'tidal.kafka.librdkafka')
    """
    settings = config.client(**overrides)
    settings.setdefault("logger", LOGGER)
    return settings


@dataclass(frozen=True)
class PartitionInfo:
    """One partition: its leader and replicas, and its first and next offsets.

    ``end`` is the last stable offset (what a ``read_committed`` reader reaches; the same as
    the high watermark when no transaction is open); ``records`` counts ``end - start``,
    transaction markers included.
    """

    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    start: int
    end: int

    @property
    def records(self) -> int:
        """``end - start``."""
        return self.end - self.start


@dataclass(frozen=True)
class GroupLag:
    """A consumer group's committed offsets in one topic and how far behind the end they are.

    ``lag`` has every partition of the topic: for one the group never committed it counts
    from the partition's first offset (where ``tidal kafka consume --group`` starts).
    """

    group: str
    committed: dict[int, int]
    lag: dict[int, int]

    @property
    def total(self) -> int:
        """The lag summed over the partitions."""
        return sum(self.lag.values())


@dataclass(frozen=True)
class TopicInfo:
    """A topic's partitions and the lag of every group that committed offsets in it."""

    name: str
    partitions: list[PartitionInfo]
    groups: list[GroupLag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A plain dict (``tidal kafka describe --json``)."""
        return {
            "topic": self.name,
            "partitions": [asdict(p) | {"records": p.records} for p in self.partitions],
            "groups": {
                g.group: {
                    str(p): {"committed": g.committed.get(p), "lag": lag}
                    for p, lag in g.lag.items()
                }
                for g in self.groups
            },
        }


class KafkaAdmin:
    """Blocking admin calls on one cluster.

    Args:
        config: where the cluster is (default: ``KafkaConfig()``, i.e. ``$TIDAL_KAFKA``).
        timeout: seconds each call may take before it fails.

    Raises:
        ImportError: confluent-kafka is not installed.
    """

    def __init__(self, config: KafkaConfig | None = None, *, timeout: float = 10.0) -> None:
        require_kafka()
        from confluent_kafka.admin import AdminClient

        self.config = config if config is not None else KafkaConfig()
        self.timeout = timeout
        # Kept for the object's life: a dropped AdminClient fails its futures (_DESTROY).
        self._client: AdminClient = AdminClient(client_settings(self.config))

    @property
    def bootstrap(self) -> str:
        """The cluster's bootstrap address."""
        return self.config.bootstrap_servers

    # -- reachability -----------------------------------------------------------------------
    def answers(self, timeout: float | None = None) -> bool:
        """Whether the cluster answers a metadata request (with at least one broker)."""
        from confluent_kafka import KafkaException

        try:
            md = self._client.list_topics(timeout=self._timeout(timeout))
        except KafkaException:
            return False
        return bool(md.brokers)

    def check(self, timeout: float | None = None) -> None:
        """Fail with a clear message unless the cluster answers.

        Fails at once when every bootstrap address refuses the connection (nothing
        listens there); otherwise waits for a metadata answer.

        Args:
            timeout: seconds to wait (default: the object's timeout).

        Raises:
            ConnectorError: nothing answered at the bootstrap address in time.
        """
        if _all_refused(self.bootstrap):
            msg = (
                f"no Kafka broker listens at {self.bootstrap} (connection refused); start "
                "one with `tidal kafka up`, or point --bootstrap-servers (TIDAL_KAFKA) at "
                "your cluster"
            )
            raise ConnectorError(msg)
        wait = self._timeout(timeout)
        if not self.answers(wait):
            self._unreachable(wait)

    def _unreachable(self, waited: float) -> NoReturn:
        msg = (
            f"no Kafka broker answered at {self.bootstrap} within {waited:g} s; start one "
            "with `tidal kafka up`, or point --bootstrap-servers (TIDAL_KAFKA) at your "
            "cluster"
        )
        raise ConnectorError(msg)

    # -- topics -----------------------------------------------------------------------------
    def topics(self, *, internal: bool = False) -> list[str]:
        """The topic names, sorted; internal ones (``__consumer_offsets``...) only if asked."""
        md = self._metadata(None)
        names = sorted(md.topics)
        return names if internal else [n for n in names if not n.startswith("__")]

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has.

        Raises:
            ConnectorError: no such topic.
        """
        return len(self._topic(topic).partitions)

    def create_topic(
        self,
        topic: str,
        partitions: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        replication_factor: int = -1,
        exist_ok: bool = False,
    ) -> None:
        """Create ``topic`` and return once every partition has a leader.

        Args:
            topic: the name.
            partitions: how many partitions.
            config: topic settings (``retention.ms``, ``cleanup.policy``, ...).
            replication_factor: replicas per partition; -1 takes the broker's default.
            exist_ok: succeed if the topic exists already.

        Raises:
            ConnectorError: the cluster refused (bad name or setting, exists already).
        """
        from confluent_kafka import KafkaError
        from confluent_kafka.cimpl import NewTopic

        new = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        futures = self._client.create_topics(
            [new], operation_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            self._result(futures[topic], f"creating topic {topic!r}")
        except ConnectorError as exc:
            cause = exc.__cause__
            code = _error_code(cause)
            if not (exist_ok and code == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
        self._await_leaders(topic, partitions)

    def delete_topic(self, topic: str, *, missing_ok: bool = False) -> None:
        """Delete ``topic``.

        Raises:
            ConnectorError: the cluster refused, or (unless ``missing_ok``) no such topic.
        """
        from confluent_kafka import KafkaError

        futures = self._client.delete_topics(
            [topic], operation_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            self._result(futures[topic], f"deleting topic {topic!r}")
        except ConnectorError as exc:
            if not (missing_ok and _error_code(exc.__cause__) == KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise
            return
        self._await_gone(topic)

    def _await_gone(self, topic: str) -> None:
        """Wait until the broker's metadata no longer lists a deleted ``topic``.

        The controller accepts the deletion before the broker applies it; until then the
        topic is still listed and creating it again fails, so a delete that returns early
        would race the next create (``tidal demo --reset`` followed by a new run).
        """
        deadline = time.monotonic() + self.timeout
        while topic in self._metadata(None).topics:  # all topics: never auto-creates it
            if time.monotonic() > deadline:
                msg = (
                    f"topic {topic!r} at {self.bootstrap} was still listed "
                    f"{self.timeout:g} s after deleting it"
                )
                raise ConnectorError(msg)
            time.sleep(0.05)  # the broker applies the controller's record shortly

    def _await_leaders(self, topic: str, partitions: int) -> None:
        """Wait until every partition has a leader that serves it.

        Metadata reaches the broker a moment after the controller created the topic, and the
        leader loads the partition a moment after that: listing offsets proves both.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            md = self._metadata(topic).topics.get(topic)
            if (
                md is not None
                and md.error is None
                and len(md.partitions) >= partitions
                and all(p.leader >= 0 for p in md.partitions.values())
            ):
                self.start_offsets(topic)  # retries until the leaders serve the partitions
                return
            if time.monotonic() > deadline:
                msg = (
                    f"topic {topic!r} was created at {self.bootstrap} but its partitions had "
                    f"no leader after {self.timeout:g} s"
                )
                raise ConnectorError(msg)
            time.sleep(0.05)  # the broker applies the controller's record shortly

    # -- offsets and groups -----------------------------------------------------------------
    def end_offsets(self, topic: str, *, committed: bool = True) -> dict[int, int]:
        """The next offset of every partition.

        Args:
            topic: the topic.
            committed: the last stable offset (where a ``read_committed`` reader stops);
                ``False`` for the high watermark (open transactions included).
        """
        from confluent_kafka import IsolationLevel
        from confluent_kafka.admin._listoffsets import OffsetSpec

        level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        spec: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        return self._offsets(topic, spec, isolation_level=level)

    def start_offsets(self, topic: str) -> dict[int, int]:
        """The first offset still kept of every partition."""
        from confluent_kafka.admin._listoffsets import OffsetSpec

        spec: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        return self._offsets(topic, spec)

    def _offsets(self, topic: str, spec: Any, **kwargs: Any) -> dict[int, int]:
        """List offsets, retrying while a partition's leader is still being loaded."""
        from confluent_kafka import TopicPartition

        n = self.partitions(topic)
        request = {TopicPartition(topic, p): spec for p in range(n)}
        deadline = time.monotonic() + self.timeout
        while True:
            futures = self._client.list_offsets(request, request_timeout=self.timeout, **kwargs)
            try:
                return {
                    tp.partition: int(self._result(f, f"listing offsets of {topic!r}").offset)
                    for tp, f in futures.items()
                }
            except ConnectorError as exc:
                if (
                    _error_code(exc.__cause__) not in _loading_codes()
                    or time.monotonic() > deadline
                ):
                    raise
            time.sleep(0.05)  # a new or restarted partition leader is loading its log

    def request_delete_records(
        self, topic: str, before: Mapping[int, int]
    ) -> dict[int, Future[Any]]:
        """Ask the cluster to delete the records of ``topic`` below offsets; do not wait.

        Args:
            topic: the topic.
            before: per partition, the first offset to keep (every record below it goes).

        Returns:
            Per partition, a future whose result has the partition's new first offset
            (``.low_watermark``), or that raises ``KafkaException``. See
            :meth:`delete_records` for the blocking form.
        """
        from confluent_kafka import TopicPartition

        request = [TopicPartition(topic, p, int(off)) for p, off in before.items()]
        futures = self._client.delete_records(
            request, request_timeout=self.timeout, operation_timeout=self.timeout
        )
        return {tp.partition: f for tp, f in futures.items()}

    def delete_records(self, topic: str, before: Mapping[int, int]) -> dict[int, int]:
        """Delete the records of ``topic`` below offsets; the partitions' new first offsets.

        What ``kafka-delete-records.sh`` does (Kafka Streams purges its repartition topics
        with it). Consumers positioned below the new first offset jump to it.

        Raises:
            ConnectorError: the cluster refused (e.g. an offset past the partition's end).
        """
        futures = self.request_delete_records(topic, before)
        return {
            p: int(self._result(f, f"deleting records of {topic!r}[{p}]").low_watermark)
            for p, f in futures.items()
        }

    def groups(self) -> list[str]:
        """The consumer groups the cluster knows, sorted."""
        future = self._client.list_consumer_groups(request_timeout=self.timeout)
        listing = self._result(future, "listing consumer groups")
        return sorted(g.group_id for g in listing.valid)

    def delete_group(self, group: str, *, missing_ok: bool = False) -> None:
        """Delete consumer group ``group`` (its committed offsets); it must have no members.

        Raises:
            ConnectorError: the cluster refused, or (unless ``missing_ok``) no such group.
        """
        from confluent_kafka import KafkaError

        futures = self._client.delete_consumer_groups([group], request_timeout=self.timeout)
        try:
            self._result(futures[group], f"deleting consumer group {group!r}")
        except ConnectorError as exc:
            if not (missing_ok and _error_code(exc.__cause__) == KafkaError.GROUP_ID_NOT_FOUND):
                raise

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """``group``'s committed offsets in ``topic`` (partitions it never committed left out).

        Asked through a consumer of the group (which does not join it), not the
        AdminClient's ``list_consumer_group_offsets``: librdkafka 2.x crashes the process
        on that call while the group coordinator is not available, e.g. on a new broker
        (librdkafka issue 5040, confluent-kafka-python issue 1982).
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        parts = [TopicPartition(topic, p) for p in range(self.partitions(topic))]
        consumer = Consumer(
            client_settings(self.config, **{"group.id": group, "enable.auto.commit": False})
        )
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    got = consumer.committed(parts, timeout=self.timeout)
                    break
                except KafkaException as exc:
                    if _error_code(exc) not in _loading_codes() or time.monotonic() > deadline:
                        self._raise(exc, f"reading group {group!r}'s offsets")
                time.sleep(0.05)  # the offsets topic is being made or loaded (a new broker)
        finally:
            consumer.close()
        return {tp.partition: int(tp.offset) for tp in got if tp.error is None and tp.offset >= 0}

    def describe(self, topic: str) -> TopicInfo:
        """Partitions (leaders, replicas, first and next offsets) and every group's lag."""
        md = self._topic(topic)
        starts = self.start_offsets(topic)
        ends = self.end_offsets(topic)
        parts = [
            PartitionInfo(
                partition=p,
                leader=int(md.partitions[p].leader),
                replicas=list(md.partitions[p].replicas),
                isr=list(md.partitions[p].isrs),
                start=starts[p],
                end=ends[p],
            )
            for p in sorted(md.partitions)
        ]
        lags = []
        for group in self.groups():
            done = self.committed(group, topic)
            if done:
                lag = {p: max(ends[p] - done.get(p, starts[p]), 0) for p in sorted(ends)}
                lags.append(GroupLag(group, dict(sorted(done.items())), lag))
        return TopicInfo(topic, parts, lags)

    # -- plumbing ---------------------------------------------------------------------------
    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _metadata(self, topic: str | None) -> Any:
        from confluent_kafka import KafkaException

        try:
            return self._client.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            if not self.answers(min(self.timeout, 2.0)):
                self._unreachable(self.timeout)
            self._raise(exc, "reading metadata")

    def _topic(self, topic: str) -> Any:
        md = self._metadata(topic).topics.get(topic)
        if md is None or md.error is not None:
            msg = (
                f"no topic {topic!r} at {self.bootstrap}; create it with `tidal kafka create "
                f"{topic} --partitions N` (the topics there: `tidal kafka topics`)"
            )
            raise ConnectorError(msg)
        return md

    def _result(self, future: Future[Any], what: str) -> Any:
        from confluent_kafka import KafkaException

        try:
            return future.result(timeout=self.timeout + 5.0)
        except KafkaException as exc:
            self._raise(exc, what)
        except FutureTimeout as exc:
            msg = f"{what} at {self.bootstrap}: no answer within {self.timeout + 5.0:g} s"
            raise ConnectorError(msg) from exc

    def _raise(self, exc: Exception, what: str) -> NoReturn:
        err: Any = exc.args[0] if exc.args else None
        said = err.str() if hasattr(err, "str") else str(exc)
        msg = f"{what} at {self.bootstrap} failed: {said}"
        raise ConnectorError(msg) from exc


def _all_refused(bootstrap: str) -> bool:
    """Whether every ``host:port`` of ``bootstrap`` refuses a TCP connection right now.

    Example:
        >>> import socket
        >>> with socket.socket() as s:
        ...     s.bind(("127.0.0.1", 0))
        ...     closed = f"127.0.0.1:{s.getsockname()[1]}"
        >>> _all_refused(closed), _all_refused("not-an-address")
        (True, False)
    """
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition("://")[2].rpartition(":")
        if not sep or not port.isdigit():
            return False  # let librdkafka judge what this code cannot parse
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return False
        except ConnectionRefusedError:
            continue
        except OSError:
            return False  # a timeout or a name that does not resolve: not a plain "refused"
    return True


def _loading_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset(
        {
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.REPLICA_NOT_AVAILABLE,
            # the client's metadata still names the leader of a topic deleted and created again
            KafkaError.UNKNOWN_LEADER_EPOCH,
            KafkaError.FENCED_LEADER_EPOCH,
            KafkaError.OFFSET_NOT_AVAILABLE,
        }
    )


def _error_code(exc: BaseException | None) -> int | None:
    err = exc.args[0] if exc is not None and exc.args else None
    code = getattr(err, "code", None)
    return int(code()) if callable(code) else None
