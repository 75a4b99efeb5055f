"""What a running app holds: its settings, the models by name, the registry of collections, and readiness.

Start-up is in two steps. :meth:`ServiceState.check_startup` runs in the lifespan before the server answers and
makes the refusals that are cheap (an unreadable default model, or a default collection whose manifest names
another model's fingerprint): the server then does not start, as before. :meth:`ServiceState.start_loading` then
loads the default model and opens the default collection (a long replay, for a big one) in a background thread, so
``/livez`` answers at once; until that is done every request that needs a model or a collection gets 503
``not_ready`` (or ``load_failed``, with the cause, when loading failed).
"""

from __future__ import annotations

import logging
import os
import threading

from hamdex.index import CollectionLike, FingerprintMismatchError, Manifest, open_or_create_collection
from hamdex.index.registry import Registry, peek_fingerprint
from hamdex.models import checkpoint
from hamdex.models.hasher import Hasher
from hamdex.service.auth import ApiKeys
from hamdex.service.errors import ApiError
from hamdex.service.hashers import DEFAULT, Hashers
from hamdex.service.settings import Settings

LOG = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: Settings, api_keys: ApiKeys | None = None) -> None:
        self.settings = settings
        self.api_keys = api_keys or ApiKeys()
        self.hashers = Hashers(settings.model_path, settings.models_dir, settings.device)
        # encode-only: a root that is never a directory, so this process claims no root lock and opens nothing
        root = os.devnull if settings.encode_only else settings.collections_dir
        self.registry = Registry(root, on_open=self._check_model, snapshot_every=settings.snapshot_every)
        self._done = threading.Event()  # loading finished, well or not
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ---- models of collections ----------------------------------------------------------------------------

    def model_name(self, name: str, manifest: Manifest) -> str:
        """The model a collection is bound to: ``default`` for the default collection, else its manifest's."""
        return DEFAULT if name == DEFAULT else manifest.model or DEFAULT

    def hasher_for(self, name: str, collection: CollectionLike) -> Hasher:
        return self.hashers.get(self.model_name(name, collection.manifest))

    def loaded_hasher_for(self, name: str, collection: CollectionLike) -> Hasher | None:
        """The collection's model if it is loaded already, else None (never loads)."""
        return self.hashers.loaded(DEFAULT if name == DEFAULT else collection.model or DEFAULT)

    def _check_model(self, name: str, collection: CollectionLike) -> None:
        """Refuse a collection whose codes came from another model than the one it is bound to."""
        hasher = self.hasher_for(name, collection)
        if hasher.fingerprint != collection.fingerprint:
            raise FingerprintMismatchError(collection.path, hasher.fingerprint, collection.fingerprint)

    # ---- start-up -----------------------------------------------------------------------------------------

    def check_startup(self) -> None:
        """The cheap refusals, before serving: raises CheckpointError or FingerprintMismatchError."""
        expected = checkpoint.read_meta(self.settings.model_path)["fingerprint"]
        found = None if self.settings.encode_only else peek_fingerprint(self.settings.collection_path)
        if found is not None and found != expected:
            raise FingerprintMismatchError(self.settings.collection_path, expected, found)

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load, name="hamdex-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            hasher = self.hashers.get(DEFAULT)
            if self.settings.encode_only:
                LOG.info(
                    "ready: model %s (%d bits) on %s, no collection", hasher.fingerprint, hasher.n_bits, hasher.device
                )
                return
            path = self.settings.collection_path
            collection = open_or_create_collection(
                path,
                hasher.n_bits,
                hasher.fingerprint,
                self.settings.index_kind,
                model=DEFAULT,
                snapshot_every=self.settings.snapshot_every,
                backend=self.settings.backend,
                milvus_uri=self.settings.milvus_uri,
            )
            try:
                self.registry.attach(DEFAULT, collection)
            except BaseException:
                collection.close()
                raise
            LOG.info(
                "ready: model %s (%d bits) on %s, default collection %s with %d items",
                hasher.fingerprint,
                hasher.n_bits,
                hasher.device,
                path,
                len(collection),
            )
        except BaseException as exc:
            LOG.exception("loading the model or the default collection failed; /readyz stays 503")
            self._error = exc
        finally:
            self._done.set()

    # ---- readiness ----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    def check_ready(self) -> None:
        """Raise 503 ``not_ready`` while loading, ``load_failed`` when loading failed."""
        if not self._done.is_set():
            raise ApiError("not_ready", "the model and the default collection are still loading; retry shortly")
        if self._error is not None:
            raise ApiError("load_failed", f"loading the model or the default collection failed: {self._error}")

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until loading is done; re-raise its error; TimeoutError if it takes longer than ``timeout``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the service was not ready after {timeout} s")
        if self._error is not None:
            raise self._error

    # ---- shutdown -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for loading to end, then close every collection (each snapshots what changed)."""
        if self._thread is not None:
            self._thread.join()
        self.registry.close()
