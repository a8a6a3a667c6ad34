"""`S3`: a small client in the spirit of Metaflow's `metaflow.S3`, configured by the task
contract: the S3 endpoint (path-style addressing when one is set), server-side encryption on
every upload, the retry count and the number of parallel transfers."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Callable, Iterable, Sequence, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .context import TaskContext
from .errors import ConfigError, NotFoundError

T = TypeVar("T")
R = TypeVar("R")

# Transfers run in the worker pool; each file's transfer stays in its worker thread.
_ONE_THREAD = TransferConfig(use_threads=False)
_MISSING = ("404", "NoSuchKey", "NotFound")


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (`bucket`, `key`)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, key


def make_client(context: TaskContext) -> Any:
    """A boto3 S3 client for the task: FLOWLINE_S3_ENDPOINT with path-style addressing when set
    (S3-compatible stores and the emulator need it), FLOWLINE_S3_RETRY_COUNT retries after the
    first attempt, and a connection pool as large as FLOWLINE_S3_WORKER_COUNT. Credentials and
    region come from boto3's usual chain (on Batch: the job role)."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": context.retry_count + 1},
        max_pool_connections=max(10, context.worker_count),
        s3={"addressing_style": "path"} if context.s3_endpoint else None,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=context.s3_endpoint, config=config
    )


class S3:
    """Reads and writes objects under a root prefix: the task's own artifact prefix
    (FLOWLINE_ARTIFACT_URI) unless `s3root` names another. Keys are relative to the root; a key
    that is a full `s3://` URL is used as is.

    Every upload carries FLOWLINE_S3_SSE (and FLOWLINE_S3_KMS_KEY_ID with `aws:kms`).
    `put_files` and `get_files` run FLOWLINE_S3_WORKER_COUNT transfers at once. Use it as a
    context manager, or call `close()`, to remove what `get_files` downloaded to its own
    temporary folder."""

    def __init__(
        self,
        s3root: str | None = None,
        *,
        context: TaskContext | None = None,
        client: Any = None,
    ) -> None:
        self.context = TaskContext.from_env() if context is None else context
        root = s3root if s3root is not None else self.context.artifact_uri
        if root is not None:
            split_url(root)
            root = root if root.endswith("/") else root + "/"
        self.root: str | None = root
        self.client: Any = make_client(self.context) if client is None else client
        self.workers: int = self.context.worker_count
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> S3:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Removes the temporary folder `get_files` downloaded into (if it made one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- single objects ----------------------------------------------------------------------

    def url(self, key: str) -> str:
        """The full URL of `key`."""
        if key.startswith("s3://"):
            return key
        if self.root is None:
            raise ConfigError(
                f"cannot resolve the key {key!r}: FLOWLINE_ARTIFACT_URI is unset and no s3root "
                "was given; pass a full s3:// URL or S3(s3root=...)"
            )
        return self.root + key.lstrip("/")

    def put(self, key: str, data: bytes | str) -> str:
        """Writes `data` (text is encoded as UTF-8) to `key`; returns the object's URL."""
        url = self.url(key)
        bucket, name = split_url(url)
        body = data.encode() if isinstance(data, str) else data
        self.client.put_object(Bucket=bucket, Key=name, Body=body, **self.context.sse_args())
        return url

    def get(self, key: str) -> bytes:
        """The contents of `key`; `NotFoundError` naming the URL if it does not exist."""
        url = self.url(key)
        bucket, name = split_url(url)
        try:
            return self.client.get_object(Bucket=bucket, Key=name)["Body"].read()  # type: ignore[no-any-return]
        except ClientError as err:
            if _missing(err):
                raise NotFoundError(f"no S3 object {url}") from None
            raise

    # -- many files --------------------------------------------------------------------------

    def put_files(self, pairs: Iterable[tuple[str, str | Path]]) -> list[str]:
        """Uploads each local file `path` to `key`, FLOWLINE_S3_WORKER_COUNT at once; returns
        the URLs in the order given."""
        jobs = [(self.url(key), Path(path)) for key, path in pairs]
        for url, path in jobs:
            if not path.is_file():
                raise NotFoundError(f"cannot upload {path} to {url}: no such file")
        extra = self.context.sse_args()

        def upload(job: tuple[str, Path]) -> str:
            url, path = job
            bucket, name = split_url(url)
            self.client.upload_file(str(path), bucket, name, ExtraArgs=extra, Config=_ONE_THREAD)
            return url

        return self._map(upload, jobs)

    def get_files(self, keys: Sequence[str], dest: str | Path | None = None) -> list[Path]:
        """Downloads each key, FLOWLINE_S3_WORKER_COUNT at once, to `dest/<key>` (default: a
        temporary folder of this object, removed by `close()`); returns the local paths in the
        order given. A full-URL key lands at `dest/<bucket>/<key>`."""
        if dest is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="flowline-s3-")
            dest = self._tmp.name
        root = Path(dest)
        jobs = [(self.url(key), root / _local_name(key)) for key in keys]

        def download(job: tuple[str, Path]) -> Path:
            url, path = job
            bucket, name = split_url(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client.download_file(bucket, name, str(path), Config=_ONE_THREAD)
            except ClientError as err:
                if _missing(err):
                    raise NotFoundError(f"no S3 object {url}") from None
                raise
            return path

        return self._map(download, jobs)

    def list_paths(self, prefix: str = "", recursive: bool = False) -> list[str]:
        """Keys under `prefix` (relative to the root, or a full URL), relative to the root. Like
        Metaflow's `list_paths`, only the immediate children unless `recursive`: a child
        "folder" is listed once, ending in "/"."""
        url = self.url(prefix)
        bucket, name = split_url(url)
        if name and not name.endswith("/"):
            name += "/"
        base = f"s3://{bucket}/{name}"
        strip = self.root if self.root is not None and base.startswith(self.root) else f"s3://{bucket}/"
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": name}
        if not recursive:
            args["Delimiter"] = "/"
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            found += [f"s3://{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", [])]
            found += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(path[len(strip) :] for path in found)

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) <= 1 or self.workers == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="flowline-s3") as pool:
            return list(pool.map(fn, items))


def _missing(err: ClientError) -> bool:
    return str(err.response.get("Error", {}).get("Code")) in _MISSING


def _local_name(key: str) -> PurePosixPath:
    name = PurePosixPath(key[len("s3://") :] if key.startswith("s3://") else key.lstrip("/"))
    if not name.parts or ".." in name.parts:
        raise ValueError(f"cannot download the key {key!r} to a local file: it leaves the folder")
    return name
