"""Text to token ids and back, with a bundle's own cleanup rule and vocabulary (d2l §8.2).

Two shapes: rnnlm's `/v1/tokenize` and `/v1/detokenize`, and vLLM's `/tokenize`,
`/detokenize` and `/tokenizer_info` at the server root, which lm-evaluation-harness' remote
tokenizer calls (it strips `/v1/completions` from its base_url and names no model). Without
a `model` those describe the default LM; under `/models/{id}/` they describe that model, so
`base_url=http://HOST:PORT/models/{id}/v1/completions` evaluates any model with its own
tokenizer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.deps import (
    ModelId,
    ServedModel,
    ServicesDep,
    body_of,
    language_model_at,
    language_model_of,
)
from app.errors import InvalidInput, responses
from app.schemas import MODEL_NAME
from app.schemas.completions import MAX_PROMPT_TOKENS
from app.schemas.tokenize import (
    AddedToken,
    DetokenizeRequest,
    DetokenizeResponse,
    ServerDetokenizeRequest,
    ServerDetokenizeResponse,
    ServerTokenizeRequest,
    ServerTokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenizerRule,
)

router = APIRouter(prefix="/v1", tags=["tokenization"])
server_router = APIRouter(tags=["tokenization"])
ERRORS = responses(400, 401, 404, 413, 422, 503)
TokenizeBody = Annotated[TokenizeRequest, Depends(body_of(TokenizeRequest))]
TokenizeModel = Annotated[ServedModel, Depends(language_model_of(TokenizeRequest))]
DetokenizeBody = Annotated[DetokenizeRequest, Depends(body_of(DetokenizeRequest))]
DetokenizeModel = Annotated[ServedModel, Depends(language_model_of(DetokenizeRequest))]


def check_ids(lm: ServedModel, ids: list[int], param: str) -> None:
    """422 naming the first id outside the model's vocabulary."""
    size = len(lm.tokenizer.vocab)
    bad = next((i for i, t in enumerate(ids) if t >= size), None)
    if bad is not None:
        raise InvalidInput(
            f"{param}.{bad}: {ids[bad]} is not a token of {lm.name!r} "
            f"(its ids are 0 to {size - 1})",
            param=f"{param}.{bad}",
            code="id_out_of_range",
        )


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize_text(body: TokenizeBody, lm: TokenizeModel, services: ServicesDep) -> Response:
    """Normalize `text` with the bundle's rule (shown as `tokenizer`) and map its tokens to
    ids (unknown ones to `<unk>`, 0; a byte model has no unknown tokens)."""

    def build() -> TokenizeResponse:
        encoded = lm.tokenizer.encode(body.text)
        return TokenizeResponse(
            model=lm.name,
            tokenizer=TokenizerRule.of(lm.tokenizer),
            cleaned=encoded.cleaned,
            ids=encoded.ids,
            tokens=lm.tokenizer.rule.split(encoded.cleaned),
            count=len(encoded.ids),
            unknown_tokens=encoded.unknown,
        )

    return await services.answer(build, len(body.text))


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize_ids(
    body: DetokenizeBody, lm: DetokenizeModel, services: ServicesDep
) -> Response:
    """The text of token ids (`ids`, or `tokens` as vLLM names them): characters joined, or
    words joined by single spaces."""
    ids = body.token_ids
    check_ids(lm, ids, body.ids_name)
    return await services.answer(
        lambda: DetokenizeResponse(model=lm.name, text=lm.tokenizer.decode(ids)), len(ids)
    )


def tokenizer_info(lm: ServedModel) -> TokenizerInfo:
    tokenizer = lm.tokenizer
    vocab = tokenizer.vocab.idx_to_token
    start, unk = tokenizer.start_id, tokenizer.vocab.unk
    return TokenizerInfo(
        tokenizer_class=f"rnnlm-{tokenizer.normalize}-{tokenizer.level}",
        model=lm.name,
        normalize=tokenizer.normalize,
        level=tokenizer.level,
        vocab_size=len(vocab),
        vocab=vocab,
        bos_token=None if start is None else tokenizer.decode([start]),
        unk_token=None if unk is None else vocab[unk],
        model_max_length=MAX_PROMPT_TOKENS,
        added_tokens_decoder={str(i): AddedToken(content=vocab[i]) for i in tokenizer.special_ids},
    )


def tokenize_prompt(lm: ServedModel, body: ServerTokenizeRequest) -> ServerTokenizeResponse:
    ids = lm.tokenizer.encode(body.prompt).ids
    return ServerTokenizeResponse(
        count=len(ids),
        max_model_len=MAX_PROMPT_TOKENS,
        tokens=ids,
        token_strs=lm.tokenizer.id_pieces(ids) if body.return_token_strs else None,
    )


def detokenize_tokens(lm: ServedModel, body: ServerDetokenizeRequest) -> ServerDetokenizeResponse:
    check_ids(lm, body.tokens, "tokens")
    return ServerDetokenizeResponse(prompt=lm.tokenizer.decode(body.tokens))


ModelQuery = Annotated[
    str | None,
    Query(
        pattern=MODEL_NAME,
        description="bundle name; default: the default LM",
        examples=["char-lstm"],
    ),
]
TokenizeServerBody = Annotated[ServerTokenizeRequest, Depends(body_of(ServerTokenizeRequest))]
DetokenizeServerBody = Annotated[ServerDetokenizeRequest, Depends(body_of(ServerDetokenizeRequest))]
DefaultTokenize = Annotated[ServedModel, Depends(language_model_of(ServerTokenizeRequest))]
DefaultDetokenize = Annotated[ServedModel, Depends(language_model_of(ServerDetokenizeRequest))]
ScopedTokenize = Annotated[ServedModel, Depends(language_model_at(ServerTokenizeRequest))]
ScopedDetokenize = Annotated[ServedModel, Depends(language_model_at(ServerDetokenizeRequest))]


@server_router.get("/tokenizer_info", response_model=TokenizerInfo, responses=ERRORS)
async def get_tokenizer_info(services: ServicesDep, model: ModelQuery = None) -> TokenizerInfo:
    """The default (or named) LM's tokenizer: vocabulary, special tokens and the start token
    lm-eval puts before a text (vLLM's /tokenizer_info)."""
    return tokenizer_info(services.language_model(model))


@server_router.post("/tokenize", response_model=ServerTokenizeResponse, responses=ERRORS)
async def tokenize_default(
    body: TokenizeServerBody, lm: DefaultTokenize, services: ServicesDep
) -> Response:
    """Text to the ids /v1/completions reads for it (vLLM's /tokenize)."""
    return await services.answer(lambda: tokenize_prompt(lm, body), len(body.prompt))


@server_router.post("/detokenize", response_model=ServerDetokenizeResponse, responses=ERRORS)
async def detokenize_default(
    body: DetokenizeServerBody, lm: DefaultDetokenize, services: ServicesDep
) -> Response:
    """Token ids to their text (vLLM's /detokenize)."""
    return await services.answer(lambda: detokenize_tokens(lm, body), len(body.tokens))


@server_router.get(
    "/models/{model_id}/tokenizer_info", response_model=TokenizerInfo, responses=ERRORS
)
async def get_model_tokenizer_info(model_id: ModelId, services: ServicesDep) -> TokenizerInfo:
    """/tokenizer_info of the model in the path."""
    return tokenizer_info(services.language_model(model_id))


@server_router.post(
    "/models/{model_id}/tokenize", response_model=ServerTokenizeResponse, responses=ERRORS
)
async def tokenize_scoped(
    body: TokenizeServerBody, lm: ScopedTokenize, services: ServicesDep
) -> Response:
    """/tokenize with the model in the path."""
    return await tokenize_default(body, lm, services)


@server_router.post(
    "/models/{model_id}/detokenize", response_model=ServerDetokenizeResponse, responses=ERRORS
)
async def detokenize_scoped(
    body: DetokenizeServerBody, lm: ScopedDetokenize, services: ServicesDep
) -> Response:
    """/detokenize with the model in the path."""
    return await detokenize_default(body, lm, services)
