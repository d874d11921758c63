"""The service's wire format: request bodies in, response and error bodies out.

The shapes are those of the widely used moderation API, so an LLM gateway or the official
`openai` client can call crossguard unchanged:

- request: `{"input": "text" | ["text", ...] | [{"type": "text", "text": ...}, ...], "model": "..."}`
  (`model` is accepted and ignored: the answer names the model that scored it);
- `/v1/moderations`: `{"id", "model", "results": [{"flagged", "categories", "category_scores",
  "category_applied_input_types"}]}`, one result per input, in order, one category per rule;
- `/v1/check`: `{"id", "model", "results": [record, ...]}`, the records `crossguard batch` writes,
  with `"source": "request"` and `"line"`: the input's 1-based position in the request;
- errors: `{"error": {"message", "type", "code", "param"}}` with one line of message.

Pure functions, no web framework: the handlers in `app.py` call them.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from typing import Any

from crossguard_cli.engine.results import Result
from crossguard_cli.records.inputs import Record, record_from_text
from crossguard_cli.records.text import is_blank
from crossguard_cli.rules import RuleSet

REQUEST_SOURCE = "request"


class ApiError(Exception):
    """An answer other than 200: HTTP status, the error body's type and code, one line of message."""

    def __init__(self, status: int, message: str, *, code: str, type: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = " ".join(str(message).split())
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def encoded(self) -> bytes:
        """The error body as sent: compact JSON, UTF-8."""
        return json.dumps(self.body(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's headers for ASGI, content type and length included."""
        body = self.encoded()
        return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items())]


async def send_error(send: Any, exc: ApiError) -> None:
    """Answer with `exc` on a raw ASGI `send`: for middleware, which runs outside the routes. The
    handlers answer with `app.error_response`, built from the same body and headers."""
    await send({"type": "http.response.start", "status": exc.status, "headers": exc.raw_headers()})
    await send({"type": "http.response.body", "body": exc.encoded()})


def too_large(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(413, message, code=code, param=param)


def parse_request(body: bytes, *, max_inputs: int, max_chars: int) -> list[Record]:
    """The inputs of a request body as records (`source` "request", `line` the 1-based position).

    Raises:
        ApiError: 400 for a body that is not JSON or an input that cannot be scored (empty after
            normalisation, not valid text); 422 for JSON of the wrong shape; 413 for too many inputs.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply", code="invalid_json") from None
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text", code="invalid_json") from None
    except ValueError as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ApiError(400, f"request body is not valid JSON: {msg}{where}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise _shape(f"request body must be a JSON object with an 'input' field, got {_json_type(data)}")
    if "input" not in data:
        raise _shape("missing field 'input': a string or an array of strings", param="input")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise _shape(f"'model' must be a string, got {_json_type(model)}", param="model")
    given = data["input"]
    if isinstance(given, str):
        items: Sequence[Any] = [given]
        names = ["input"]
    elif isinstance(given, list):
        if not given:
            raise _shape("'input' is an empty array; send at least one string", param="input")
        if len(given) > max_inputs:
            raise too_large(f"'input' has {len(given)} items; at most {max_inputs} per request (--max-inputs)",
                            code="too_many_inputs", param="input")
        items = given
        names = [f"input[{i}]" for i in range(len(given))]
    else:
        raise _shape(f"'input' must be a string or an array of strings, got {_json_type(given)}", param="input")
    return [_record(item, name, i, max_chars) for i, (item, name) in enumerate(zip(items, names, strict=True))]


def _record(item: Any, name: str, index: int, max_chars: int) -> Record:
    record_id = None
    if isinstance(item, dict):  # {"type": "text", "text": ...}; an "id" is echoed by /v1/check
        kind = item.get("type", "text")
        if kind != "text":
            raise _shape(f"{name}.type: {kind!r} inputs are not supported; crossguard scores text",
                         param=f"{name}.type")
        text = item.get("text")
        if not isinstance(text, str):
            raise _shape(f"{name}.text must be a string, got {_json_type(text)}", param=f"{name}.text")
        record_id = item.get("id")
    elif isinstance(item, str):
        text = item
    else:
        raise _shape(f"{name} must be a string, got {_json_type(item)}", param=name)
    record = record_from_text(text, REQUEST_SOURCE, index + 1)  # the records layer decides what is readable
    if record.status == "error":
        raise ApiError(400, f"{name}: {record.error}", code="invalid_text", param=name)
    if record.status == "empty":
        raise ApiError(400, f"{name} is empty: nothing visible after normalisation; nothing to score",
                       code="empty_input", param=name)
    if len(text) > max_chars and is_blank(text[:max_chars]):  # what --max-chars keeps is all the model reads
        raise ApiError(400, f"{name}: nothing visible in the first {max_chars} characters (--max-chars); nothing "
                       "to score", code="empty_input", param=name)
    return dataclasses.replace(record, id=record_id)


def unscored(results: Sequence[Result], records: Sequence[Record]) -> ApiError | None:
    """The error that fails the whole request closed when any input was not scored, else None.

    An input that could not be scored (out of memory, non-finite scores) is 503: the request
    may succeed later; an empty one (caught before scoring, so never expected here) is 400.
    """
    for result, rec in zip(results, records, strict=True):
        name = f"input[{rec.line - 1}]"
        if result.status == "error":
            return ApiError(503, f"{name} could not be scored: {result.error}", code="scoring_failed",
                            type="server_error", param=name)
        if result.status != "ok":
            return ApiError(400, f"{name} is empty: nothing visible after normalisation; nothing to score",
                            code="empty_input", param=name)
    return None


def moderation_response(results: Sequence[Result], ruleset: RuleSet, model: str) -> dict[str, Any]:
    """The moderation API's response: per input, `flagged`, and per rule whether it fired and
    the probability (0-1) of its deciding label, as printed by `batch` (percentage / 100)."""
    out = []
    for result in results:
        fired = set(result.flagged)
        scores = result.scores
        out.append({
            "flagged": result.verdict == "flagged",
            "categories": {rule.name: rule.name in fired for rule in ruleset.rules},
            "category_scores": {rule.name: round(scores[rule.name][rule.score_field] / 100.0, 6)
                                for rule in ruleset.rules},
            "category_applied_input_types": {rule.name: ["text"] for rule in ruleset.rules},
        })
    return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": out}


def check_response(results: Sequence[Result], model: str) -> dict[str, Any]:
    """crossguard's own records, as `batch` writes them, one per input, in order."""
    return {"id": f"chk-{uuid.uuid4().hex}", "model": model, "results": [r.to_dict() for r in results]}


def rules_response(ruleset: RuleSet, model: str, loaded_at: str) -> dict[str, Any]:
    """The rules in force: what `/v1/rules` shows (no prompt data)."""
    rules = [{"name": r.name, "label": r.label, "threshold": r.threshold, "margin": r.margin,
              "hypotheses": list(r.hypotheses), "classifier": r.classifier, "description": r.description}
             for r in ruleset.rules]
    return {"model": model, "source": ruleset.source, "mode": ruleset.mode, "loaded_at": loaded_at, "rules": rules}


def _shape(message: str, param: str | None = None) -> ApiError:
    return ApiError(422, message, code="invalid_input", param=param)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), "null")


__all__ = ["REQUEST_SOURCE", "ApiError", "check_response", "moderation_response", "parse_request",
           "rules_response", "send_error", "too_large", "unscored"]
