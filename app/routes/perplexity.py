"""Perplexity (d2l §9.3.2): of one text, of many texts, of each line of a document, as JSON
or as an uploaded file. Teacher-forced; all texts of a request share batched passes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import breakdown as ngram
from app.deps import ServedModel, ServicesDep
from app.errors import InvalidInput, responses
from app.schemas.perplexity import (
    MAX_DOCUMENT_CHARS,
    MAX_ITEMS,
    MAX_TEXT_CHARS,
    Mode,
    PerplexityItem,
    PerplexityRequest,
    PerplexityResponse,
    PerplexityScore,
    PerplexityUpload,
    TokenLogprob,
    ZeroProbability,
)
from app.uploads import FILE_FIELD, is_upload, read_json, read_upload, request_body, upload_text
from models.ngram_lm import NgramLM
from models.precision import Precision
from models.score import Score

router = APIRouter(prefix="/v1/perplexity", tags=["scoring"])


@dataclass
class _Item:
    """One text (or line) to score: its ids after the context's, and where scoring starts."""

    ids: list[int]
    first: int
    text_tokens: int  # the text's own tokens, after the context's
    unknown: int
    skipped: str | None = None


def split_lines(text: str) -> list[str]:
    """A document's lines: split at "\\n" (a "\\r" before it dropped), no trailing empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _zero_probability(lm: ServedModel, item: _Item, logprobs: list[float]) -> ZeroProbability:
    k = next(i for i, lp in enumerate(logprobs) if lp == -math.inf)
    token = lm.tokenizer.tokens([item.ids[item.first + k]])[0]
    position = item.first + k - (len(item.ids) - item.text_tokens)
    reason = (
        f"{lm.name} gives {token!r} probability 0 after the tokens before it, so the "
        "text's probability is 0 and its perplexity infinite (a count-based model without "
        "smoothing does this for an n-gram it never saw)"
    )
    if isinstance(lm.model, NgramLM):
        reason = ngram.zero_reason(lm.model, lm.tokenizer, item.ids, item.first + k)
    return ZeroProbability(
        position=position,
        token=token,
        reason=reason,
    )


def _score_fields(score: Score, unknown: int) -> dict[str, object]:
    finite = math.isfinite(score.nll)
    counted = score.count > 0 and finite
    return {
        "perplexity": score.perplexity if counted else None,
        "cross_entropy": score.cross_entropy if counted else None,
        "bits_per_token": score.bits_per_token if counted else None,
        "log_prob": -score.nll if finite else None,
        "tokens_scored": score.count,
        "unknown_tokens": unknown,
        "infinite": not finite,
    }


async def _score_items(
    lm: ServedModel,
    services: ServicesDep,
    items: list[_Item],
    return_tokens: bool,
    precision: Precision,
) -> tuple[list[Score], list[ZeroProbability | None]]:
    live = [i for i, item in enumerate(items) if item.skipped is None]
    scores = await services.score_many(
        lm,
        [(items[i].ids, items[i].first) for i in live],
        precision,
        return_logprobs=return_tokens,
    )
    by_item = dict(zip(live, scores, strict=True))
    zero: list[ZeroProbability | None] = [None] * len(items)
    for i, score in by_item.items():
        if math.isfinite(score.nll):
            continue
        logprobs = score.token_logprobs
        if logprobs is None:  # rare: score the one text again, token by token
            (again,) = await services.score_many(
                lm, [(items[i].ids, items[i].first)], precision, return_logprobs=True
            )
            logprobs = again.token_logprobs or []
        zero[i] = _zero_probability(lm, items[i], logprobs)
    empty = Score(0.0, 0)
    return [by_item.get(i, empty) for i in range(len(items))], zero


def _tokens(lm: ServedModel, item: _Item, score: Score) -> list[TokenLogprob] | None:
    if score.token_logprobs is None:
        return None
    tokens = lm.tokenizer.tokens(item.ids[item.first :])
    return [
        TokenLogprob(token=t, logprob=lp if math.isfinite(lp) else None)
        for t, lp in zip(tokens, score.token_logprobs, strict=True)
    ]


def _items(
    lm: ServedModel, body: PerplexityRequest, texts: list[str], mode: Mode, param: str
) -> list[_Item]:
    """`texts` tokenized, after the context's tokens; 422 for a text with nothing to score."""
    tokenizer = lm.tokenizer
    context = tokenizer.encode(body.context)
    items = []
    for index, text in enumerate(texts):
        where = f"{param}.{index}" if mode == "texts" else param
        if mode == "lines" and len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"line {index + 1} has {len(text)} characters, over the per-text cap of "
                f"{MAX_TEXT_CHARS}",
                param=param,
                code="line_too_long",
            )
        encoded = tokenizer.encode(text)
        ids = context.ids + encoded.ids
        first = len(context.ids) if context.ids else 1
        item = _Item(ids, first, len(encoded.ids), context.unknown + encoded.unknown)
        if len(ids) <= first:
            reason = "needs at least one token to score (two without a context) after the rule"
            if mode != "lines":
                raise InvalidInput(f"{where}: the text {reason}", param=where, code="too_short")
            item.skipped = reason
        items.append(item)
    if mode == "lines" and all(item.skipped for item in items):
        raise InvalidInput(
            f"no line of the {param} holds a token to score", param=param, code="too_short"
        )
    return items


async def _respond(
    lm: ServedModel,
    services: ServicesDep,
    body: PerplexityRequest,
    texts: list[str],
    mode: Mode,
    param: str,
) -> Response:
    """Score `texts` (one, many, or a document's lines) and build the response; long
    texts are tokenized, and large answers built, off the event loop (Services.work)."""
    size = len(body.context) + sum(len(text) for text in texts)
    items = await services.work(lambda: _items(lm, body, texts, mode, param), size)
    scores, zero = await _score_items(lm, services, items, body.return_tokens, body.precision)
    entries = len(items) + (sum(s.count for s in scores) if body.return_tokens else 0)
    total = Score(
        sum(s.nll for s in scores),
        sum(s.count for s in scores),
    )
    first_zero = next((i for i, z in enumerate(zero) if z is not None), None)
    total_zero = None
    if first_zero is not None:
        total_zero = zero[first_zero].model_copy(update={"item": first_zero})  # type: ignore[union-attr]
    head = PerplexityScore.model_validate(
        _score_fields(total, sum(item.unknown for item in items)) | {"zero_probability": total_zero}
    )
    if mode == "text":
        breakdown = None
        if body.breakdown:
            breakdown = await ngram.breakdown(lm, services, items[0].ids, items[0].first)
        return await services.answer(
            lambda: PerplexityResponse(
                model=lm.name,
                mode="text",
                tokens=_tokens(lm, items[0], scores[0]),
                breakdown=breakdown,
                **head.model_dump(),
            ),
            entries,
        )

    def build() -> PerplexityResponse:
        results = [
            PerplexityItem(
                index=i,
                line=i + 1 if mode == "lines" else None,
                skipped=item.skipped,
                tokens=_tokens(lm, item, score) if item.skipped is None else None,
                zero_probability=zero[i],
                **_score_fields(score, item.unknown),
            )
            for i, (item, score) in enumerate(zip(items, scores, strict=True))
        ]
        return PerplexityResponse(model=lm.name, mode=mode, results=results, **head.model_dump())

    return await services.answer(build, entries)


@router.post(
    "",
    response_model=PerplexityResponse,
    responses=responses(400, 401, 404, 413, 422, 503, 504),
    openapi_extra=request_body(PerplexityRequest, PerplexityUpload),
)
async def score_perplexity(request: Request, services: ServicesDep) -> Response:
    """Score text token by token, each token predicted from everything before it.

    As JSON: one `text`; a list of `texts` (each scored on its own, with a token-weighted
    total); or one `text` with `per_line` (each line scored on its own, in order, to rank
    and filter lines). As `multipart/form-data`: a plain-text `file` (up to the body cap),
    scored whole or, with `per_line=true`, line by line.

    `context` is read before each text and not scored; without it a text's first token
    has nothing to be predicted from and is not scored. Unknown tokens count as `<unk>`.
    A text a model gives probability 0 (an unsmoothed n-gram model) has `perplexity: null`
    and `infinite: true`, and `zero_probability` says which token and why (for an n-gram
    model, its counts). For n-gram models, `breakdown` shows the counts behind every token
    of one text, and `order` and `smoothing` read the same counts at a lower order or with
    another smoothing.
    """
    if is_upload(request):
        form, data = await read_upload(request, PerplexityUpload)
        lm = services.language_model(form.model)
        text = upload_text(data, lm.tokenizer.level)
        body = PerplexityRequest.model_construct(
            model=form.model,
            text=text,
            texts=None,
            per_line=form.per_line,
            context=form.context,
            return_tokens=form.return_tokens,
            precision=form.precision,
        )
        param = FILE_FIELD
    else:
        body = await read_json(request, PerplexityRequest)
        lm = services.language_model(body.model)
        param = "texts" if body.texts is not None else "text"
        if body.text is not None and not body.per_line and len(body.text) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"text has {len(body.text)} characters, over the cap of {MAX_TEXT_CHARS} "
                f"(with per_line, a document of up to {MAX_DOCUMENT_CHARS})",
                param="text",
                code="too_long",
            )
    lm = await ngram.scoring_model(lm, body, services)
    if body.texts is not None:
        return await _respond(lm, services, body, body.texts, "texts", param)
    assert body.text is not None
    if not body.per_line:
        return await _respond(lm, services, body, [body.text], "text", param)
    lines = split_lines(body.text)
    if len(lines) > MAX_ITEMS:
        raise InvalidInput(
            f"the {param} has {len(lines)} lines, over the cap of {MAX_ITEMS}",
            param=param,
            code="too_many_lines",
        )
    return await _respond(lm, services, body, lines, "lines", param)
