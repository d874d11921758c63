"""The service described for machines: the OpenAPI 3.1 document `GET /openapi.json` serves.

Client generators and API gateways read it. It is written out here, beside the shapes it
describes (`protocol.py`), not derived from a framework's models: the service has none, and a
test (tests/test_serve_openapi.py) checks every kind of real response against these schemas,
so the document cannot drift from what the service sends. OpenAPI 3.1 schemas are JSON Schema
2020-12, so any JSON Schema validator reads them.

Pure data, no web framework.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
_ref = "#/components/schemas/{}".format


def _schema(name: str) -> dict[str, str]:
    return {"$ref": _ref(name)}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _schema("Error")}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": 'Bearer realm="crossguard"', "schema": {"type": "string"}}}
_AUTH = {"401": _error("Missing or wrong API key (only when the server has one).", _WWW_AUTHENTICATE)}
_SCORING_ERRORS = {
    "400": _error("The body is not JSON, or an input cannot be scored (empty after normalisation, not valid text)."),
    **_AUTH,
    "413": _error("The body is over --max-body-bytes, or 'input' holds more than --max-inputs items."),
    "422": _error("JSON of the wrong shape: no 'input', or an input that is not text."),
    "429": _error("The queue is full (--max-queue); retry after Retry-After seconds.", _RETRY_AFTER),
    "500": _error("An internal error; the request was not scored."),
    "503": _error("The service is shutting down, or an input could not be scored (the whole request fails "
                  "closed: no input is reported as not flagged without having been scored).", _RETRY_AFTER),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "code", "param"], "additionalProperties": False,
            "properties": {
                "message": {"type": "string", "description": "One line saying what is wrong and how to fix it."},
                "type": {"type": "string", "enum": ["invalid_request_error", "rate_limit_error", "server_error"]},
                "code": {"type": "string", "description": "Machine-readable: invalid_json, invalid_input, "
                         "empty_input, invalid_text, too_many_inputs, request_too_large, rate_limit_exceeded, "
                         "unavailable, scoring_failed, invalid_api_key, not_found, method_not_allowed, "
                         "internal_error, ..."},
                "param": {"type": ["string", "null"], "description": "The request field at fault, e.g. input[2]."},
            }}},
    },
    "TextPart": {
        "type": "object", "required": ["text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"},
                       "id": {"description": "Any JSON value; /v1/check echoes it in the record."}},
    },
    "ModerationRequest": {
        "type": "object", "required": ["input"],
        "properties": {
            "input": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"oneOf": [{"type": "string"}, _schema("TextPart")]}},
            ], "description": "One text, or up to --max-inputs of them (strings or text parts)."},
            "model": {"type": "string", "description": "Accepted and ignored: the answer names the model used."},
        },
    },
    "ModerationResult": {
        "type": "object", "additionalProperties": False,
        "required": ["flagged", "categories", "category_scores", "category_applied_input_types"],
        "properties": {
            "flagged": {"type": "boolean", "description": "Some rule fired."},
            "categories": {"type": "object", "additionalProperties": {"type": "boolean"},
                           "description": "Per rule: whether it fired."},
            "category_scores": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0,
                                                                            "maximum": 1},
                                "description": "Per rule: the probability (0-1) of its deciding label."},
            "category_applied_input_types": {"type": "object",
                                             "additionalProperties": {"type": "array", "items": {"const": "text"}}},
        },
    },
    "ModerationResponse": {
        "type": "object", "required": ["id", "model", "results"], "additionalProperties": False,
        "properties": {"id": {"type": "string", "pattern": "^modr-"}, "model": {"type": "string"},
                       "results": {"type": "array", "items": _schema("ModerationResult"),
                                   "description": "One per input, in order."}},
    },
    "Score": {
        "type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
        "description": "Percentages, two decimals: entailment / neutral / contradiction of the rule's deciding "
                       "hypothesis, or probability (a classifier rule); abstain when the model has abstention heads.",
    },
    "Record": {
        "type": "object", "required": ["source", "line", "text", "status", "verdict", "flagged", "uncertain",
                                       "scores", "truncated", "windows"],
        "description": "A scored record, exactly as `crossguard batch` writes it (source 'request', line: the "
                       "input's 1-based position in the request).",
        "properties": {
            "source": {"const": "request"}, "line": {"type": "integer", "minimum": 1},
            "id": {"description": "The text part's id, when it had one."},
            "text": {"type": "string", "description": "The input exactly as sent."},
            "status": {"const": "ok"},
            "verdict": {"type": "string", "enum": ["flagged", "uncertain", "allowed"]},
            "flagged": {"type": "array", "items": {"type": "string"}},
            "uncertain": {"type": "array", "items": {"type": "string"}},
            "route": {"type": ["string", "null"], "description": "route mode only: the best rule that fired."},
            "scores": {"type": "object", "additionalProperties": _schema("Score")},
            "truncated": {"type": "boolean"},
            "windows": {"type": "integer", "minimum": 0},
        },
    },
    "CheckResponse": {
        "type": "object", "required": ["id", "model", "results"], "additionalProperties": False,
        "properties": {"id": {"type": "string", "pattern": "^chk-"}, "model": {"type": "string"},
                       "results": {"type": "array", "items": _schema("Record")}},
    },
    "Rule": {
        "type": "object", "required": ["name", "label", "threshold", "margin", "hypotheses", "description"],
        "properties": {"name": {"type": "string"}, "label": {"type": "string"},
                       "threshold": {"type": "number"}, "margin": {"type": "number"},
                       "hypotheses": {"type": "array", "items": {"type": "string"}},
                       "description": {"type": ["string", "null"]}},
    },
    "RulesResponse": {
        "type": "object", "required": ["model", "source", "mode", "loaded_at", "rules"],
        "properties": {"model": {"type": "string"}, "source": {"type": "string"},
                       "mode": {"type": "string", "enum": ["guard", "route"]},
                       "loaded_at": {"type": "string", "format": "date-time"},
                       "rules": {"type": "array", "items": _schema("Rule")}},
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "failed"]}, "reason": {"type": "string"}},
    },
    "Ready": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ready", "not ready", "draining"]},
                       "reason": {"type": "string"}, "model": {"type": "string"}, "rules": {"type": "integer"}},
    },
}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _schema(schema)}}}


def _scoring(summary: str, response: str, description: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "description": description, "operationId": summary.split()[0].lower(),
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": True, "content": {JSON: {"schema": _schema("ModerationRequest")}}},
        "responses": {"200": _json("One result per input, in order.", response), **_SCORING_ERRORS},
    }}


def document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service (`version`: crossguard's)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "crossguard", "version": version,
                 "description": "Scores prompts against natural-language rules with an NLI cross-encoder. "
                                "/v1/moderations takes and answers the moderation API's shapes."},
        "paths": {
            "/v1/moderations": _scoring("Moderate inputs", "ModerationResponse",
                                        "The moderation API: one category per rule."),
            "/v1/check": _scoring("Check inputs", "CheckResponse", "crossguard's own records, as `batch` writes."),
            "/v1/rules": {"get": {"summary": "The rules in force", "operationId": "rules",
                                  "security": [{}, {"bearer": []}],
                                  "responses": {"200": _json("The rules in force.", "RulesResponse"), **_AUTH}}},
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "responses": {
                "200": _json("Alive.", "Health"),
                "503": _json("The scoring worker failed: restart the service.", "Health")}}},
            "/readyz": {"get": {"summary": "Readiness", "operationId": "readyz", "responses": {
                "200": _json("Ready to score.", "Ready"),
                "503": _json("Not ready, or draining after SIGTERM.", "Ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "responses": {
                "200": {"description": "The Prometheus text format.", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Only when the server has --api-key / "
                                                          "CROSSGUARD_API_KEY."}},
        },
    }


__all__ = ["document"]
