"""The durable inbox under faults, with real processes, a real SQLite file and a real Redis:
``SIGKILL`` while turns run, ``SIGTERM`` with a backlog, a full disk, overload, and front-ends
plus workers on one Redis that is killed mid-run. Each test counts what was lost and doubled."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from omnichannel.runtime.stores.sqlite import SQLiteStore
from omnichannel.testing import RecordingChannelServer, text_event
from tests import redis_support
from tests.helpers import free_port, wait_until
from tests.processes import BOT, WEBHOOK, Process, bot_env, opened, running
from tests.redis_support import unique_prefix

redis_url = redis_support.redis_url  # the fixture, for the tests below


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'omnichannel.db'}"
    url: str = request.getfixturevalue("redis_url")
    return f"{url}?prefix={unique_prefix('faults')}"


def once_each(texts: list[str], expected: set[str]) -> tuple[set[str], list[str]]:
    """(lost, duplicated) among ``texts`` against ``expected``."""
    counts = Counter(texts)
    lost = expected - set(counts)
    return lost, sorted(t for t, n in counts.items() if n > 1)


def marks_count(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_while_turns_run_then_restart_answers_each_once(
    store_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    expected = {f"slow {i}" for i in range(24)}
    with RecordingChannelServer() as channel:
        with running(
            store_url, channel.channel_url, *BOT, "--workers", "24", env=bot_env(3.0, marks)
        ) as serve:
            for i in range(24):
                assert serve.post(text_event(f"slow {i}", chat_id=i, message_id=f"m{i}")).ok
            # all 24 acknowledged turns are running the 3 s bot: kill the process now
            assert wait_until(lambda: marks_count(marks) == 24, 20), marks_count(marks)
            serve.process.send_signal(signal.SIGKILL)
            serve.process.wait(10)
            assert channel.calls == []
            # the platform's re-sends of acknowledged deliveries are duplicates
        with running(store_url, channel.channel_url, *BOT, "--workers", "24") as restarted:
            for i in range(3):
                resent = restarted.post(text_event(f"slow {i}", chat_id=i, message_id=f"m{i}"))
                assert resent.status_code == 200
            channel.wait_for(24, timeout=60)
            assert restarted.terminate() == 0
            assert "Traceback" not in restarted.log()
        lost, duplicated = once_each(channel.texts(), expected)
        assert (lost, duplicated) == (set(), [])
        assert len(channel.calls) == 24


def test_sigterm_with_a_backlog_leaves_it_for_the_next_start(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'omnichannel.db'}"
    total = 5000
    with RecordingChannelServer() as channel:
        with running(
            store_url,
            channel.channel_url,
            *BOT,
            "--workers",
            "4",
            "--max-pending",
            str(total * 2),
            "--shutdown-timeout",
            "10",
            "--max-ack-delay",
            "0",  # no flow control: the point is a backlog
            "--http-threads",
            "8",  # a thread per client: none is shed for waiting (the point is a backlog)
            env=bot_env(0.2),
        ) as serve:
            sessions = threading.local()

            def post(i: int) -> int:
                session = getattr(sessions, "s", None)
                if session is None:
                    session = sessions.s = requests.Session()
                    session.trust_env = False
                event = text_event(f"t{i}", chat_id=i % 500, message_id=f"m{i}")
                return session.post(serve.url + WEBHOOK, json=event, timeout=30).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(post, range(total)))
            assert Counter(statuses) == {200: total}
            answered_before = len(channel.calls)
            assert answered_before < total - 1000  # a real backlog is left
            assert serve.terminate() == 0
            log = serve.log()
            assert "Traceback" not in log
            stopped = [line for line in log.splitlines() if "turn(s) in the inbox" in line]
            assert len(stopped) == 1, log[-2000:]
        with opened(store_url) as store:
            assert store.pending("inbox") > 0
        with running(store_url, channel.channel_url, *BOT, "--workers", "8") as restarted:
            channel.wait_for(total, timeout=240)
            assert restarted.terminate() == 0
        lost, duplicated = once_each(channel.texts(), {f"t{i}" for i in range(total)})
        assert (len(lost), duplicated) == (0, [])
        assert len(channel.calls) == total


def _limit_file_size(limit: int) -> None:
    # in the child, before exec: writes past ``limit`` bytes fail with EFBIG instead of
    # killing the process with SIGXFSZ (an ignored signal stays ignored across exec)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_disk_full_never_acknowledges_what_was_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "omnichannel.db"
    SQLiteStore(db).close()  # the schema, checkpointed into the main file
    limit = db.stat().st_size + 48 * 1024
    store_url = f"sqlite:///{db}"
    total = 40
    expected = {f"d{i}" for i in range(total)}
    with RecordingChannelServer() as channel:
        with running(
            store_url,
            channel.channel_url,
            *BOT,
            preexec=lambda: _limit_file_size(limit),
        ) as serve:
            statuses = {}
            for i in range(total):
                event = text_event(f"d{i}", chat_id=i % 4, message_id=f"m{i}")
                statuses[i] = serve.post(event).status_code
            counts = Counter(statuses.values())
            assert set(counts) <= {200, 503}, counts
            assert counts[503] > 0, "the disk never filled up"
            # the platform retries what was refused, but the disk is still full
            refused = [i for i, status in statuses.items() if status != 200]
            retry = serve.post(
                text_event(f"d{refused[0]}", chat_id=refused[0] % 4, message_id=f"m{refused[0]}")
            )
            assert retry.status_code == 503
            assert retry.headers.get("Retry-After")
            # the operator frees space: lift the limit of the running process
            resource.prlimit(
                serve.process.pid,
                resource.RLIMIT_FSIZE,
                (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
            )
            for i in range(total):  # the platform re-sends everything it was not sure of
                if statuses[i] != 200:
                    event = text_event(f"d{i}", chat_id=i % 4, message_id=f"m{i}")
                    assert serve.post(event).status_code == 200
            channel.wait_for(total, timeout=90)
            assert serve.terminate() == 0
            log = serve.log()
        assert "Traceback" not in log, log[-3000:]
        lost, duplicated = once_each(channel.texts(), expected)
        assert (lost, duplicated) == (set(), [])


def test_overload_answers_only_200_or_503_and_logs_no_traceback(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'omnichannel.db'}"
    with RecordingChannelServer() as channel:
        with running(
            store_url,
            channel.channel_url,
            *BOT,
            "--workers",
            "2",
            "--max-pending",
            "40",
            env=bot_env(0.05),
        ) as serve:
            sessions = threading.local()

            def post(i: int) -> tuple[int, str | None]:
                session = getattr(sessions, "s", None)
                if session is None:
                    session = sessions.s = requests.Session()
                    session.trust_env = False
                event = text_event(f"o{i}", chat_id=i % 50, message_id=f"m{i}")
                response = session.post(serve.url + WEBHOOK, json=event, timeout=30)
                return response.status_code, response.headers.get("Retry-After")

            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(post, range(1500)))
            elapsed = time.monotonic() - started
            statuses = Counter(status for status, _ in answers)
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[503] > 0 and statuses[200] > 0, statuses
            assert all(after for status, after in answers if status == 503)
            accepted = {f"o{i}" for i, (status, _) in enumerate(answers) if status == 200}
            channel.wait_for(len(accepted), timeout=120)
            assert serve.terminate() == 0
            log = serve.log()
        assert "Traceback" not in log
        warnings = [line for line in log.splitlines() if "max_pending" in line]
        assert 1 <= len(warnings) <= elapsed / 10 + 2, warnings
        lost, duplicated = once_each(channel.texts(), accepted)
        assert (lost, duplicated) == (set(), [])
        assert set(channel.texts()) == accepted


# front-ends and workers on one Redis -------------------------------------------------------------
class PrivateRedis:
    """A redis-server with AOF (fsync always) in a temporary directory, killable and restartable."""

    def __init__(self, *, aof: bool = True) -> None:
        self.aof = aof
        binary = shutil.which("redis-server")
        if binary is None:
            redis_support._unavailable("redis-server is not on PATH")
        self.binary = str(binary)
        self.dir = tempfile.mkdtemp(prefix="omnichannel-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_until(self._up, 10), "redis-server did not start"

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.close()


def _deliver_everywhere(
    front_ends: list[Process], chats: int, per_chat: int, on_half: threading.Event | None = None
) -> None:
    """Post every message to both front-ends (as a platform retrying on each), chat by chat in
    order; a refused post is retried until it is acknowledged, as a platform does."""

    def one_chat(chat: int) -> None:
        session = requests.Session()
        session.trust_env = False
        for n in range(per_chat):
            if on_half is not None and chat == 0 and n == per_chat // 2:
                on_half.set()
            event = text_event(f"c{chat} n{n}", chat_id=chat, message_id=f"c{chat}-{n}")
            for front in front_ends:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        status = session.post(front.url + WEBHOOK, json=event, timeout=10)
                        if status.status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    assert time.monotonic() < deadline, "never acknowledged"
                    time.sleep(0.1)

    with ThreadPoolExecutor(chats) as pool:
        list(pool.map(one_chat, range(chats)))


@pytest.mark.redis
@pytest.mark.parametrize("kill_redis", [False, True], ids=["steady", "redis-killed"])
def test_front_ends_and_workers_on_one_redis(private_redis: PrivateRedis, kill_redis: bool) -> None:
    store = f"{private_redis.url}?prefix={unique_prefix('scale')}"
    chats, per_chat = 6, 15
    with RecordingChannelServer() as channel:
        with (
            running(store, channel.channel_url, "--front-end") as fe1,
            running(store, channel.channel_url, "--front-end") as fe2,
            running(store, channel.channel_url, *BOT, command="worker") as w1,
            running(store, channel.channel_url, *BOT, command="worker") as w2,
        ):
            half = threading.Event()
            outage = None
            if kill_redis:

                def cut() -> None:
                    half.wait(60)
                    private_redis.kill()
                    time.sleep(1.5)
                    private_redis.start()

                outage = threading.Thread(target=cut)
                outage.start()
            _deliver_everywhere([fe1, fe2], chats, per_chat, half)
            if outage is not None:
                outage.join(60)
            channel.wait_for(chats * per_chat, timeout=120)
            for process in (fe1, fe2, w1, w2):
                assert process.terminate() == 0, process.log()[-2000:]
                assert "Traceback" not in process.log()
        expected = {f"c{c} n{n}" for c in range(chats) for n in range(per_chat)}
        lost, duplicated = once_each(channel.texts(), expected)
        assert lost == set()
        if not kill_redis:
            assert duplicated == []
            for chat in range(chats):
                assert channel.texts(chat) == [f"c{chat} n{n}" for n in range(per_chat)]
        else:
            for chat in range(chats):  # order holds for first arrivals
                firsts = list(dict.fromkeys(channel.texts(chat)))
                assert firsts == [f"c{chat} n{n}" for n in range(per_chat)]


@pytest.mark.redis
def test_serve_and_worker_warn_once_about_a_redis_without_persistence(
    private_redis: PrivateRedis,
) -> None:
    volatile = PrivateRedis(aof=False)
    try:
        with RecordingChannelServer() as channel:
            for server, warned in ((volatile, True), (private_redis, False)):
                store = f"{server.url}?prefix={unique_prefix('persist')}"
                with (
                    running(store, channel.channel_url) as serve,
                    running(store, channel.channel_url, command="worker") as worker,
                ):
                    assert serve.terminate() == 0 and worker.terminate() == 0
                    for log in (serve.log(), worker.log()):
                        assert log.count("Redis has no persistence") == (1 if warned else 0), log
    finally:
        volatile.close()
