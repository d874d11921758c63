"""`GET /openapi.json` describes what the service really sends: every kind of answer a test can
provoke over real HTTP on 127.0.0.1 is checked against the document's own schema for that path,
method and status (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
jsonschema = pytest.importorskip("jsonschema")

from conftest import cli_env  # noqa: E402

from crossguard_cli.serve.testing import ServerProcess  # noqa: E402

KEY = "openapi-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
RULES = ("version: 1\nmode: route\nrules:\n  - name: money\n    hypothesis: The prompt is about money.\n"
         "  - name: question\n    hypothesis: The prompt is a question.\n    threshold: 0.3\n")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    rules = tmp_path_factory.mktemp("openapi") / "rules.yaml"
    rules.write_text(RULES)
    args = ["-m", str(model_dir), "-r", str(rules), "--max-inputs", "3", "--max-body-bytes", "4000"]
    with ServerProcess(args, env=cli_env(CROSSGUARD_API_KEY=KEY)) as srv:
        status, _, doc = srv.get("/openapi.json")
        assert status == 200
        srv.doc = doc
        yield srv


def conforms(doc: dict, path: str, method: str, status: int, headers: dict, body) -> None:
    """The answer matches the document: the status is listed, the body validates against its schema."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which the document does not list"
    spec = responses[str(status)]
    (media, content), = spec["content"].items()
    assert headers["content-type"].split(";")[0] == media
    schema = {"components": doc["components"], **content["schema"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    for name in spec.get("headers", {}):
        if name != "WWW-Authenticate" or status == 401:
            assert name.lower() in headers, f"{status} lacks its documented {name} header"


def test_the_document_is_openapi_3_1_with_valid_schemas_and_every_route(server):
    doc = server.doc
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "crossguard"
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises, naming the fault
    assert set(doc["paths"]) == {"/v1/moderations", "/v1/check", "/v1/rules", "/healthz", "/readyz", "/metrics",
                                 "/openapi.json"}
    for path, methods in doc["paths"].items():  # every documented route answers (not 404 / 405)
        for method in methods:
            if method == "get":
                assert server.get(path, headers=AUTH)[0] == 200, path


def test_scoring_answers_conform(server):
    doc = server.doc
    inputs = ["How much is a loan?", {"type": "text", "text": "what time is it?", "id": 7}]
    for path in ("/v1/moderations", "/v1/check"):
        status, headers, body = server.post(path, {"input": inputs, "model": "anything"}, headers=AUTH)
        assert status == 200, body
        conforms(doc, path, "post", status, headers, body)
        status, headers, body = server.post(path, {"input": "one string"}, headers=AUTH)
        conforms(doc, path, "post", status, headers, body)


@pytest.mark.parametrize(("data", "status"), [
    (b"{not json", 400),
    ({"input": ["ok", " \u200b "]}, 400),
    ({"input": 5}, 422),
    ({"text": "no input field"}, 422),
    ({"input": [{"type": "image_url", "image_url": "x"}]}, 422),
    ({"input": ["a", "b", "c", "d"]}, 413),
    ({"input": "x" * 5000}, 413),
])
def test_error_answers_conform(server, data, status):
    got, headers, body = server.post("/v1/moderations", data, headers=AUTH)
    assert got == status, body
    conforms(server.doc, "/v1/moderations", "post", got, headers, body)


def test_auth_rules_probes_and_the_framework_errors_conform(server):
    doc = server.doc
    got, headers, body = server.post("/v1/check", {"input": "hi"})
    assert got == 401
    conforms(doc, "/v1/check", "post", got, headers, body)
    got, headers, body = server.get("/v1/rules", headers=AUTH)
    conforms(doc, "/v1/rules", "get", got, headers, body)
    for path in ("/healthz", "/readyz"):
        got, headers, body = server.get(path)
        conforms(doc, path, "get", got, headers, body)
    got, headers, body = server.get("/metrics")
    conforms(doc, "/metrics", "get", got, headers, body)
    # 404 and 405 come from the router, not a handler: they too are the documented Error shape.
    error = {"components": doc["components"], "$ref": "#/components/schemas/Error"}
    for got, _, body in (server.get("/nope"), server.request("DELETE", "/v1/check", headers=AUTH)):
        assert got in (404, 405)
        jsonschema.Draft202012Validator(error).validate(body)


def test_the_answers_no_test_can_provoke_here_have_the_documented_shape():
    """429, 500 and 503 are built by the same code as the others (`ApiError.body`, `send_error`)."""
    from crossguard_cli.serve import openapi
    from crossguard_cli.serve.protocol import ApiError

    doc = openapi.document("0")
    error = {"components": doc["components"], "$ref": "#/components/schemas/Error"}
    for exc in (ApiError(429, "too many inputs waiting to be scored; retry in 2 s", code="rate_limit_exceeded",
                         type="rate_limit_error"),
                ApiError(503, "the service is shutting down", code="unavailable", type="server_error"),
                ApiError(500, "internal error", code="internal_error", type="server_error")):
        jsonschema.Draft202012Validator(error).validate(exc.body())
        assert str(exc.status) in doc["paths"]["/v1/moderations"]["post"]["responses"]
