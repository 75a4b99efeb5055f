"""Service settings, read from the environment with the prefix ``HAMDEX_`` (e.g. ``HAMDEX_MODEL_PATH``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAMDEX_", protected_namespaces=())

    model_path: Path = Path("var/model")  # checkpoint directory (hamdex train --out)
    collection_path: Path = Path("var/collection")  # the default collection; created empty if missing
    collections_dir: Path = Path("var/collections")  # named collections (/v1/collections), one subdirectory each
    # online backups (POST /v1/collections/{name}/snapshots), one subdirectory per collection; unset: under
    # collections_dir, in .backups (hidden: never taken for a collection)
    backups_dir: Path | None = None
    models_dir: Path = Path("var/models")  # named model checkpoints, one subdirectory each; "default" = model_path
    index_kind: str = "flat"  # index kind for a newly created collection
    snapshot_every: int = Field(100_000, ge=1)  # changed items between background index snapshots
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch: int = Field(1024, ge=1)  # most inputs / items / queries in one request
    max_k: int = Field(1000, ge=1)  # most hits per query
    max_rerank_candidates: int = Field(1000, ge=1)  # most Hamming candidates a reranked search rescores per query
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # larger request bodies: 413
    max_bulk_line_bytes: int = Field(1024 * 1024, ge=64)  # longer NDJSON lines of a bulk body: skipped rows
    max_text_chars: int = Field(1_000_000, ge=1)  # longer texts: 422 text_too_long (20NG has a 160k-char post)
    max_metadata_bytes: int = Field(16_384, ge=2)  # larger metadata (as JSON): 422 metadata_too_large
    # longer paths + query strings: 414 uri_too_long (uvicorn itself answers a plain-text 400 beyond ~64 KiB)
    max_url_bytes: int = Field(8192, ge=256)
    request_timeout_s: float = Field(30.0, gt=0)  # slower requests: 504 timeout
    # micro-batching (service.engine): concurrent encodes / searches are coalesced into one call
    encode_max_batch: int = Field(512, ge=1)  # most inputs per model call
    search_max_batch: int = Field(256, ge=1)  # most queries per FAISS call
    # how long the first request of an idle batcher waits for company; 0: none (requests that arrive while a batch
    # runs form the next one anyway). Measured: a 2 ms wait halved single-client QPS and bought nothing at c=32.
    batch_max_wait_ms: float = Field(0.0, ge=0)
    # OpenMP threads per batched FAISS search, set in each search worker's thread; default: the CPUs divided among
    # the search workers, at least 1 (service.engine.search_threads)
    faiss_threads: int | None = Field(None, ge=1)
    # plain top-k search batches that may run at once, each in its own thread (service.batcher). Measured on 2
    # cores, c=32, 1M items (benchmarks/http_bench.py, alternating runs): 2 workers 943 / 1,275 QPS, 1: 926 / 1,121
    search_workers: int = Field(2, ge=1)
    # plain top-k searches by code skip FastAPI's routing and dependencies (service.fast_search)
    fast_search: bool = True
    queue_max_items: int = Field(8192, ge=1)  # waiting items beyond this: 429 with Retry-After
    # filtered and radius searches that may run at once, each in its own thread; more wait in a queue of
    # queue_max_items queries (service.engine)
    heavy_search_workers: int = Field(2, ge=1)
    # API keys: "<key> <scope>[,<scope>]" lines, ";"-separated here, or one per line in the file (service.auth)
    api_keys: str | None = Field(None, repr=False)
    api_keys_file: Path | None = None
    open_reads: bool = False  # with keys configured: encode and search need no key (nothing else that reads)
    open_docs: bool = False  # with keys configured: /docs, /redoc and /openapi.json need no key
    allow_unauthenticated: bool = False  # with no keys: allow binding to a non-loopback host anyway
    # uvicorn's event loop and HTTP parser: "auto" takes uvloop and httptools when installed (they are in the
    # dependencies), else asyncio and h11; benchmarks/http_bench.py compares them
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    http_parser: Literal["auto", "h11", "httptools"] = "auto"
    # serve the model alone (service.app.EncodeOnly): /v1/encode, /v1/reconstruct, /v1/generate and the probes; no
    # collection is opened and every other route answers 409 encode_only. Several worker processes (hamdex serve
    # --workers) need it: a collection has one writer (its LOCK file), so a second process could open none of them
    encode_only: bool = False
    json_logs: bool = True  # one JSON object per log line (False: plain text)
    log_level: str = "info"
    # the backend of the default collection when it is created (named ones choose theirs in POST /v1/collections):
    # "faiss" (SQLite + FAISS) or "milvus" (pip install 'hamdex[milvus]'); milvus_uri: a Milvus server's URL, or
    # unset for a milvus-lite file inside the collection directory
    backend: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = None
    # POST /v1/collections may name a Milvus server (http, https, tcp, grpc, unix URIs): off by default, since the
    # server would connect wherever an admin key says
    milvus_remote_uris: bool = False
    # CORS for browser clients on other origins (service.cors), off by default: comma-separated origins, e.g.
    # "https://app.example,https://admin.example", or "*" for any
    cors_origins: str | None = None
    cors_allow_credentials: bool = False  # keys travel in Authorization, not cookies; for proxies that need it
    cors_max_age: int = Field(600, ge=0)  # seconds a browser may cache a preflight answer

    @property
    def backups_root(self) -> Path:
        return self.backups_dir if self.backups_dir is not None else self.collections_dir / ".backups"


@lru_cache
def get_settings() -> Settings:
    return Settings()
