"""Stateful API tests: schemathesis follows the OpenAPI links (service.openapi) to build sequences such as create
collection -> upsert -> get -> search -> delete -> drop, with every check it has (``--checks all``: server errors,
status codes, schemas, headers, use after free, resource availability, and positive / negative data: a request the
document calls valid is taken, one it calls invalid refused, since it states every limit the server enforces).

The app runs in-process behind schemathesis's own ASGI client, which starts its lifespan, so the checks that send
requests of their own (use after free, ignored auth) reach it too. Seeded and bounded to run in CI in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from hamdex.service.app import create_app, wait_ready
from hamdex.service.openapi import links
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from tests import schemathesis_hooks  # noqa: F401  (the NDJSON serializer)
from tests.conftest import settings_for

ADMIN_KEY = "stateful-admin-key-0123456"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
STATEFUL = settings(
    max_examples=40,
    stateful_step_count=10,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def app(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    root = tmp_path_factory.mktemp("stateful")
    app = create_app(settings_for(text_model_dir, root, api_keys=f"{ADMIN_KEY} admin", batch_max_wait_ms=0))
    with asgi.get_client(app) as client:  # the first request starts the lifespan in schemathesis's event loop
        assert client.get("/livez").status_code == 200
        wait_ready(app, timeout=60)
        yield app
    asgi.shutdown_lifespans()  # closes the collections


def reset(app: FastAPI) -> None:
    """Drop every named collection and empty the default one. Each scenario starts from the same state, so the same
    draws get the same answers: hypothesis refuses to go on when they do not ("inconsistent data generation")."""
    with asgi.get_client(app) as client:
        wait_ready(app, timeout=60)
        # in the full suite the first listing of a run was, twice in five runs, not a 200 (not reproduced alone;
        # the answer was not captured): the harness tries three times and says what it got
        answers = []
        for _ in range(3):
            listing = client.get("/v1/collections", headers=AUTH)
            if listing.status_code == 200:
                break
            answers.append(f"{listing.status_code} {listing.text[:300]}")
            time.sleep(1)
        assert listing.status_code == 200, answers
        for collection in listing.json()["collections"]:
            if collection["name"] != "default":
                assert client.delete(f"/v1/collections/{collection['name']}", headers=AUTH).status_code == 200
        everything = {"queries": [{"code": "0000"}], "k": 1000}
        for hit in client.post("/v1/search", json=everything, headers=AUTH).json()["results"][0]:
            path = quote(hit["id"], safe="").replace(".", "%2E")
            resp = client.delete(f"/v1/items/{path}", headers=AUTH)
            assert resp.json() == {"deleted": hit["id"]}, f"stored item {hit['id']!r} cannot be deleted: {resp.text}"


def test_every_link_resolves(app: FastAPI) -> None:
    """Each link of the table is in the served document, and names an operation that exists."""
    document = app.openapi()
    operation_ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    served = {
        (method, path, status): response.get("links", {})
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        for status, response in op["responses"].items()
    }
    for source, named in links().items():
        assert set(named) <= set(served[source]), source
        assert all(served[source][name]["operationId"] in operation_ids for name in named)


def test_stateful_sequences_conform(app: FastAPI) -> None:
    """Every response of every linked sequence passes every schemathesis check."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    schema.config.checks.update(included_check_names=["all"])
    assert schema.statistic.transitions.total >= sum(len(named) for named in links().values())

    class Workflow(schema.as_state_machine()):
        def setup(self) -> None:
            reset(app)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": AUTH}

    Workflow.run(settings=STATEFUL)
