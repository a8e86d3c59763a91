"""Routes whose body is either JSON or a `multipart/form-data` file upload.

FastAPI reads one body type per route, so these routes take the request and parse it
here: JSON into the route's request model, or a form into its upload model (the form's
other fields) plus the file's bytes. Validation errors take the app's usual 422 shape,
and the whole body stays under the service's body cap (app/middleware.py).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.errors import InvalidInput
from models.text import Level, TextError, decode_utf8

M = TypeVar("M", bound=BaseModel)
FILE_FIELD = "file"
MAX_FORM_FIELDS = 16


def is_upload(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def _invalid(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


async def read_json(request: Request, model: type[M]) -> M:
    """The JSON body as `model` (400 for malformed JSON, 422 naming the field)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _invalid(exc) from None


async def read_upload(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The form's fields as `model` (a field sent twice is a list) and the file's bytes."""
    form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    upload = form.get(FILE_FIELD)
    if not isinstance(upload, UploadFile):
        raise InvalidInput(
            f"send the text as a file in the form field {FILE_FIELD!r}",
            param=FILE_FIELD,
            code="file_missing",
        )
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key == FILE_FIELD:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"form field {key!r} must be text", param=key, code="not_text")
        fields[key] = [*fields[key], value] if key in fields else value
        if isinstance(fields[key], str) and key in _listed(model):
            fields[key] = [v.strip() for v in value.split(",")]
    try:
        parsed = model.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return parsed, await upload.read()


def _listed(model: type[BaseModel]) -> set[str]:
    """Fields of `model` that hold lists: a form sends them repeated or comma-separated."""
    return {
        name
        for name, field in model.model_fields.items()
        if "list" in str(field.annotation) or "List" in str(field.annotation)
    }


def upload_text(data: bytes, level: Level) -> str:
    """An uploaded file's text for a rule of this level: UTF-8 for char and word levels
    (422 naming the byte offset otherwise), any bytes for the byte level; empty and
    whitespace-only files are refused."""
    if not data:
        raise InvalidInput("the uploaded file is empty", param=FILE_FIELD, code="empty_file")
    try:
        text = decode_utf8(data, level)
    except TextError as exc:
        raise InvalidInput(
            f"the uploaded file is {exc}", param=FILE_FIELD, code="not_utf8"
        ) from None
    if not text.strip():
        raise InvalidInput(
            f"the uploaded file holds only whitespace ({len(data)} bytes)",
            param=FILE_FIELD,
            code="blank_file",
        )
    return text


def request_body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route taking JSON or an upload (for `openapi_extra`)."""
    form = form_model.model_json_schema()
    form["properties"] = {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "a plain-text file"},
        **form["properties"],
    }
    form["required"] = [FILE_FIELD]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_model.model_json_schema()},
                "multipart/form-data": {"schema": form},
            },
        }
    }
