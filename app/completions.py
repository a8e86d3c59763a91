"""OpenAI's completions: prompts read as token ids, and the `text_completion` objects and
stream chunks built from the scheduler's output.

A prompt is text (cleaned with the bundle's rule; a change is reported, or refused with
`strict_cleanup`) or token ids (read as they are, each checked against the vocabulary), so
a client that tokenized with /tokenize gets exactly the tokens it sent.

Choices are indexed prompt-major (prompt p, choice i -> p * n + i), as OpenAI does.
`text_offset` counts characters of the choice's text, echoed prompt included. Char and word
tokens are named by their text; a byte model's byte that is no character on its own is
named `bytes:\\xNN`, as OpenAI names such tokens, and every byte of a character carries that
character's offset (`Tokenizer.text_offsets`). When a stop string ends a choice, its `logprobs`
still list the tokens that spelled the stop string (the text, like OpenAI's, excludes it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from app import sse
from app.errors import InvalidInput
from app.schemas import Usage
from app.schemas.completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    PromptCleanup,
    StopCleanup,
    check_prompt_sizes,
)
from app.streams import Completion
from models.generate import Delta, FinishReason, TokenLogprob
from models.score import Score
from models.text import TextOffsets, Tokenizer


@dataclass(frozen=True)
class Prompt:
    """One prompt as the model reads it."""

    ids: list[int]
    text: str  # what echo shows: the cleaned text, or the ids' text
    pieces: list[str]  # each token's text (for logprobs' tokens and text_offset)
    cleanup: PromptCleanup | None = None  # set when cleanup changed a text prompt


def _first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def read_prompts(name: str, tokenizer: Tokenizer, body: CompletionRequest) -> list[Prompt]:
    """Every prompt of a request as token ids; 422 naming the prompt at fault.

    Token ids must lie in the vocabulary. Texts are cleaned; with `strict_cleanup` a text
    that cleanup would change is refused, otherwise the change is noted.
    """
    prompts = []
    size = len(tokenizer.vocab)
    for p, item in enumerate(body.prompts()):
        if isinstance(item, list):
            bad = next((i for i, t in enumerate(item) if t >= size), None)
            if bad is not None:
                raise InvalidInput(
                    f"prompt {p}, position {bad}: token id {item[bad]} is not in the "
                    f"vocabulary of {name!r} (its ids are 0 to {size - 1})",
                    param="prompt",
                    code="id_out_of_range",
                )
            pieces = tokenizer.id_pieces(item)
            prompts.append(Prompt(item, "".join(pieces), pieces))
            continue
        encoded = tokenizer.encode(item)
        if not encoded.ids:
            raise InvalidInput(
                f"prompt {p} has no tokens after cleanup", param="prompt", code="empty_prompt"
            )
        cleanup = None
        if encoded.cleaned != item:
            where = _first_difference(item, encoded.cleaned)
            if body.strict_cleanup:
                raise InvalidInput(
                    f"prompt {p}: the bundle's cleanup would change this text (first at "
                    f"character {where}: {item[where : where + 12]!r} is read as "
                    f"{encoded.cleaned[where : where + 12]!r}); send the text as the model "
                    "reads it (see /tokenize), or send token ids",
                    param="prompt",
                    code="cleanup_changes_prompt",
                )
            cleanup = PromptCleanup(index=p, cleaned=encoded.cleaned, first_change=where)
        pieces = tokenizer.pieces(encoded.cleaned)
        prompts.append(Prompt(encoded.ids, encoded.cleaned, pieces, cleanup))
    try:
        check_prompt_sizes([len(p.ids) for p in prompts], "tokens")
    except ValueError as exc:
        raise InvalidInput(f"prompt: {exc}", param="prompt", code="prompt_too_long") from None
    return prompts


def changed_stops(tokenizer: Tokenizer, body: CompletionRequest) -> list[StopCleanup]:
    """The stop strings the bundle's rule changes (generation matches the changed text);
    with `strict_cleanup`, a 422 naming the first one instead."""
    changed = []
    for i, stop in enumerate(body.stop_list()):
        cleaned = tokenizer.rule.apply(stop)
        if cleaned == stop:
            continue
        if body.strict_cleanup:
            raise InvalidInput(
                f"stop.{i}: the bundle's cleanup would change the stop string {stop!r} into "
                f"{cleaned!r} ({tokenizer.rule.describe()})",
                param=f"stop.{i}",
                code="cleanup_changes_stop",
            )
        changed.append(StopCleanup(index=i, cleaned=cleaned))
    return changed


class CompletionFormat:
    """Formats one request's completions; `prompt_scores` only when echo and logprobs."""

    def __init__(
        self,
        model: str,
        tokenizer: Tokenizer,
        body: CompletionRequest,
        prompts: Sequence[Prompt],
        prompt_scores: Sequence[Score] | None,
        stop_cleanup: Sequence[StopCleanup] = (),
    ) -> None:
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model, self.tokenizer, self.prompts = model, tokenizer, prompts
        self.n, self.echo, self.logprobs = body.n, body.echo, body.logprobs is not None
        self.prompt_logprobs = (
            None
            if prompt_scores is None
            else [self._prompt_logprobs(e, s) for e, s in zip(prompts, prompt_scores, strict=True)]
        )

        cleanups = [p.cleanup for p in prompts if p.cleanup is not None]
        self.prompt_cleanup = cleanups or None
        self.stop_cleanup = list(stop_cleanup) or None
        self._streamed = False  # a stream carries the cleanup reports on its first chunk

    def _prompt_tokens(self, prompt: Prompt) -> tuple[list[str], list[int]]:
        """A prompt's token names and their offsets in its text. Char and word pieces are
        the text itself (a first word without the space the vocabulary's piece has); a
        byte is named by `logprob_token` and placed at the character it belongs to."""
        if self.tokenizer.level != "byte":
            pieces = prompt.pieces
            return pieces, [0, *accumulate(len(p) for p in pieces[:-1])]
        offsets = self.tokenizer.text_offsets()
        name = self.tokenizer.logprob_token
        return [name(i) for i in prompt.ids], [offsets.push(i) for i in prompt.ids]

    def _prompt_logprobs(self, prompt: Prompt, score: Score) -> CompletionLogprobs:
        names, offsets = self._prompt_tokens(prompt)
        name = self.tokenizer.logprob_token
        top = score.top_logprobs or [()] * score.count
        tops: list[dict[str, float] | None] = [None]
        for token, logprob, alternatives in zip(
            names[1:], score.token_logprobs or [], top, strict=True
        ):
            tops.append({name(i): v for i, v in alternatives} | {token: logprob})
        return CompletionLogprobs(
            tokens=names,
            token_logprobs=[None, *(score.token_logprobs or [])],
            top_logprobs=tops,
            text_offset=offsets,
        )

    def _logprobs(self, tokens: Sequence[TokenLogprob], offsets: TextOffsets) -> CompletionLogprobs:
        """Generated tokens' logprobs; `offsets` places them in the choice's text (it
        carries on from one streamed delta to the next)."""
        name = self.tokenizer.logprob_token
        names = [name(t.token) for t in tokens]
        return CompletionLogprobs(
            tokens=names,
            token_logprobs=[t.logprob for t in tokens],
            top_logprobs=[
                {name(i): v for i, v in t.top} | {text: t.logprob}
                for t, text in zip(tokens, names, strict=True)
            ],
            text_offset=[offsets.push(t.token) for t in tokens],
        )

    def _head(self, p: int) -> tuple[str, CompletionLogprobs | None]:
        """What a choice of prompt p starts with: the echoed prompt and its logprobs."""
        if not self.echo:
            return "", None
        return self.prompts[p].text, self.prompt_logprobs[p] if self.prompt_logprobs else None

    def _usage(self, completion_tokens: int) -> Usage:
        return Usage.of(sum(len(e.ids) for e in self.prompts), completion_tokens)

    def _response(
        self, choices: list[CompletionChoice], usage: Usage | None, first: bool = True
    ) -> CompletionResponse:
        return CompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            prompt_cleanup=self.prompt_cleanup if first else None,
            stop_cleanup=self.stop_cleanup if first else None,
        )

    def response(
        self, completions: Sequence[Sequence[Completion]], generated: int | None = None
    ) -> CompletionResponse:
        """The whole answer: completions[p][i] is choice i of prompt p; `generated`, the
        tokens decoded in all (more than the choices hold when best_of ranked some out)."""
        choices = []
        for p, per_prompt in enumerate(completions):
            head, head_logprobs = self._head(p)
            for i, c in enumerate(per_prompt):
                logprobs = None
                if self.logprobs:
                    offsets = self.tokenizer.text_offsets(len(head))
                    logprobs = self._logprobs(c.logprobs, offsets)
                    if head_logprobs is not None:
                        logprobs = _join(head_logprobs, logprobs)
                choices.append(
                    CompletionChoice(
                        index=p * self.n + i,
                        text=head + c.text,
                        logprobs=logprobs,
                        finish_reason=c.finish_reason or "length",
                    )
                )
        if generated is None:
            generated = sum(c.tokens for cs in completions for c in cs)
        return self._response(choices, self._usage(generated))

    def _chunk(
        self,
        index: int,
        text: str,
        logprobs: CompletionLogprobs | None,
        finish: FinishReason | None,
    ) -> bytes:
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        first, self._streamed = not self._streamed, True
        return sse.event(self._response([choice], None, first).model_dump())

    async def chunks(
        self, merged: AsyncIterator[tuple[int, list[Delta]]], include_usage: bool
    ) -> AsyncIterator[bytes]:
        """Server-sent chunks: echoed prompts first, then each delta as it comes (app/sse.py
        ends the stream, with an error event first if it fails, e.g. a timeout)."""
        offsets: dict[int, TextOffsets] = {}
        tokens: dict[int, int] = {}
        for p in range(len(self.prompts)):
            head, head_logprobs = self._head(p)
            for i in range(self.n):
                offsets[p * self.n + i] = self.tokenizer.text_offsets(len(head))
                tokens[p * self.n + i] = 0
                if self.echo:
                    yield self._chunk(p * self.n + i, head, head_logprobs, None)
        async for p, deltas in merged:
            for d in deltas:
                index = p * self.n + d.index
                logprobs = self._logprobs(d.logprobs, offsets[index]) if self.logprobs else None
                tokens[index] = d.tokens
                yield self._chunk(index, d.text, logprobs, d.finish_reason)
        if include_usage:
            usage = self._usage(sum(tokens.values()))
            yield sse.event(self._response([], usage, first=False).model_dump())


def _join(a: CompletionLogprobs, b: CompletionLogprobs) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=a.tokens + b.tokens,
        token_logprobs=a.token_logprobs + b.token_logprobs,
        top_logprobs=a.top_logprobs + b.top_logprobs,
        text_offset=a.text_offset + b.text_offset,
    )
