"""The S3 class against the emulator: encryption on every upload, endpoint and path-style
addressing, retries and the worker count."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Task

import flowline_task
from flowline_task import S3, ConfigError, NotFoundError


def record_threads(s3: S3, operation: str) -> list[str]:
    """Names of the threads that sent each `operation` request."""
    names: list[str] = []
    lock = threading.Lock()

    def seen(**_: Any) -> None:
        with lock:
            names.append(threading.current_thread().name)
        time.sleep(0.02)  # hold the worker, so the pool has to use its other workers

    s3.client.meta.events.register(f"before-send.s3.{operation}", seen)
    return names


def head(task: Task, url: str) -> dict[str, Any]:
    bucket, key = flowline_task.split_url(url)
    return task.s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]


def test_put_and_get_are_rooted_at_the_artifact_prefix(task: Task) -> None:
    prefix = task.become("start")
    with S3() as s3:
        assert s3.put("a.txt", "hello") == prefix + "a.txt"
        assert s3.get("a.txt") == b"hello"
        assert s3.get(prefix + "a.txt") == b"hello"  # a full URL is used as is
        with pytest.raises(NotFoundError, match=f"no S3 object {prefix}missing"):
            s3.get("missing")
    other = f"s3://{task.bucket}/elsewhere"
    assert S3(s3root=other).put("b.bin", b"\x00") == other + "/b.bin"
    assert head(task, other + "/b.bin")["ContentLength"] == 1


def test_put_with_kms_sets_the_key(task: Task) -> None:
    key = task.emu.client("kms").create_key(Description="flowline artifacts")["KeyMetadata"]
    prefix = task.become("start", FLOWLINE_S3_SSE="aws:kms", FLOWLINE_S3_KMS_KEY_ID=key["Arn"])
    with S3() as s3:
        url = s3.put("a.txt", b"secret")
        assert s3.get("a.txt") == b"secret"
    saved = flowline_task.save("config.json", {"a": 1})
    with S3() as s3:
        files = s3.put_files([("f.txt", __file__)])
    for object_url in (url, saved, *files):
        assert object_url.startswith(prefix)
        meta = head(task, object_url)
        assert meta["ServerSideEncryption"] == "aws:kms", object_url
        assert meta["SSEKMSKeyId"] == key["Arn"], object_url


def test_put_with_aes256_sends_no_kms_key(task: Task) -> None:
    # A key id beside AES256 (the controller's default key, a Flow's AES256) is not sent.
    task.become("start", FLOWLINE_S3_SSE="AES256", FLOWLINE_S3_KMS_KEY_ID="alias/unused")
    with S3() as s3:
        urls = [s3.put("a.txt", b"x"), *s3.put_files([("f.txt", __file__)])]
    for url in urls:
        meta = head(task, url)
        assert meta["ServerSideEncryption"] == "AES256"
        assert "SSEKMSKeyId" not in meta


def test_without_sse_nothing_is_asked(task: Task) -> None:
    task.become("start")
    with S3() as s3:
        seen: list[dict[str, Any]] = []
        s3.client.meta.events.register("before-call.s3.PutObject", lambda params, **_: seen.append(params))
        s3.put("a.txt", b"x")
    assert "x-amz-server-side-encryption" not in seen[0]["headers"]


def test_files_move_with_the_worker_count(task: Task, tmp_path: Path) -> None:
    prefix = task.become("start", FLOWLINE_S3_WORKER_COUNT="4")
    local = []
    for i in range(12):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"file {i}")
        local.append((f"data/part-{i:02}.txt", path))
    with S3() as s3:
        assert s3.workers == 4
        threads = record_threads(s3, "PutObject")
        urls = s3.put_files(local)
        assert urls == [prefix + key for key, _ in local]
        assert len(threads) == 12 and 1 < len(set(threads)) <= 4, threads

        s3.put("data/more/deep.txt", "deep")
        assert s3.list_paths() == ["data/"]
        assert s3.list_paths("data") == ["data/more/"] + [k for k, _ in local]
        assert s3.list_paths("data/", recursive=True) == sorted([k for k, _ in local] + ["data/more/deep.txt"])

        threads = record_threads(s3, "GetObject")
        paths = s3.get_files([k for k, _ in local])
        assert [p.read_text() for p in paths] == [f"file {i}" for i in range(12)]
        assert len(threads) == 12 and 1 < len(set(threads)) <= 4, threads
        tmp = paths[0].parents[1]
        assert tmp.is_dir()
        with pytest.raises(NotFoundError, match=f"{prefix}data/nope"):
            s3.get_files(["data/part-00.txt", "data/nope"], dest=tmp_path / "dl")
    assert not tmp.exists()  # close() removed get_files' own folder

    task.become("start", FLOWLINE_S3_WORKER_COUNT="1")
    with S3() as s3:
        threads = record_threads(s3, "PutObject")
        s3.put_files(local)
        assert len(set(threads)) == 1


def test_endpoint_is_addressed_by_path(task: Task) -> None:
    task.become("start")
    with S3() as s3:
        urls: list[str] = []
        s3.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: urls.append(request.url))
        s3.put("a.txt", b"x")
    assert urls == [f"{task.emu.endpoint}/{task.bucket}/root/team/flow/run-1/start/0/a.txt"]


def test_retry_count_bounds_the_attempts(task: Task) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    task.become("start", FLOWLINE_S3_RETRY_COUNT="2", FLOWLINE_S3_ENDPOINT=f"http://127.0.0.1:{port}")
    with S3() as s3:
        attempts: list[str] = []
        s3.client.meta.events.register("before-send.s3.PutObject", lambda **_: attempts.append("x"))
        with pytest.raises(Exception, match="Could not connect"):
            s3.put("a.txt", b"x")
    assert len(attempts) == 3  # the first attempt and two retries


def test_relative_keys_need_a_root(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="FLOWLINE_ARTIFACT_URI is unset"):
        S3().url("a.txt")
