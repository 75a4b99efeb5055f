"""Property-based API tests: schemathesis generates requests (valid and invalid) for every operation of
/openapi.json and checks that the service never answers 5xx, and that every status code and response body is the
one the schema documents. The app runs with API keys and every request carries an admin key, so the generated
requests reach the routes' own logic rather than stopping at 401.

The schema is read at import from the app's own /openapi.json (serving it needs no model, so no lifespan runs);
the requests go to a started app that has loaded a tiny model (a module-scoped fixture), through its TestClient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from service.app import create_app, wait_ready
from service.settings import Settings
from tests.conftest import settings_for

ADMIN_KEY = "schemathesis-admin-key-0123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.response_schema_conformance,
]

# the bulk endpoint's NDJSON body: generated as a string, sent as it is
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schema = schemathesis.openapi.from_dict(
    TestClient(create_app(Settings(api_keys=None, api_keys_file=None))).get("/openapi.json").json()
)


@pytest.fixture(scope="module")
def client(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("schemathesis")
    settings = settings_for(text_model_dir, root, api_keys=f"{ADMIN_KEY} admin", batch_max_wait_ms=0)
    # a 5xx must reach the checks as a response (not_a_server_error), not be re-raised here
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client.app, timeout=60)
        # what the generated requests will often name ("0" is a favourite), so they get past 404 more often
        assert client.post("/v1/collections", json={"name": "0"}, headers=AUTH).status_code == 201
        items = {"items": [{"id": "0", "input": "goal team", "metadata": {"n": 0}}]}
        for path in ("/v1/items", "/v1/collections/0/items"):
            assert client.post(path, json=items, headers=AUTH).status_code == 200
        yield client


@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@schema.parametrize()
def test_api_conforms_to_its_schema(case: schemathesis.Case, client: TestClient) -> None:
    kwargs = case.as_transport_kwargs(headers=AUTH)  # the arguments of a `requests` call
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), str | bytes):  # a raw body: httpx calls it content
        kwargs["content"] = kwargs.pop("data")
    response = client.request(**kwargs)
    case.validate_response(response, checks=CHECKS)
