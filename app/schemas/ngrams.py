from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from app.schemas import PlotOptions, ResponseBody, StrictRequest, Text
from models.corpus import CORPUS_NAME as CORPUS_NAME_PATTERN
from models.ngrams import MAX_N

MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_TOP_K = 1000
CORPUS_NAME = CORPUS_NAME_PATTERN.pattern
Order = Annotated[int, Field(ge=1, le=MAX_N)]


def _one_or_many(n: object) -> object:
    """`"n": 2` means `[2]`: a single order is what a user's first try writes."""
    if not isinstance(n, int) or isinstance(n, bool):
        return n
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n must be in [1, {MAX_N}]")
    return [n]


# A list of orders, or one order as a plain integer (the schema shows both forms).
Orders = Annotated[
    list[Order], BeforeValidator(_one_or_many, json_schema_input_type=Order | list[Order])
]


def check_orders(n: list[int]) -> list[int]:
    if not 1 <= len(n) <= MAX_N or len(set(n)) != len(n):
        raise ValueError(f"give 1 to {MAX_N} distinct orders")
    if any(not 1 <= k <= MAX_N for k in n):
        raise ValueError(f"each n must be in [1, {MAX_N}]")
    return sorted(n)


class NgramOptions(StrictRequest):
    """What to count; also the form fields beside an uploaded file."""

    level: Literal["word", "char"] = Field("word", description="count words or characters")
    n: Orders = Field(
        default_factory=lambda: [1, 2, 3],
        min_length=1,
        max_length=MAX_N,
        description=f"the order to count, or a list of distinct orders; each 1..{MAX_N}",
        examples=[[1, 2, 3]],
    )
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="entries per table")
    min_count: int = Field(1, ge=1, le=1_000_000, description="drop n-grams seen fewer times")

    @field_validator("n")
    @classmethod
    def _orders(cls, n: list[int]) -> list[int]:
        return check_orders(n)


class NgramRequest(NgramOptions):
    corpus: str | None = Field(
        None,
        pattern=CORPUS_NAME,
        description="a named corpus (GET /v1/corpora: the data dir's *.txt files and the "
        "book); give this or `text`",
        examples=["timemachine"],
    )
    text: Text | None = Field(
        None,
        min_length=1,
        description=f"text to count (up to {MAX_TEXT_BYTES} bytes UTF-8); give this or `corpus`",
    )

    @model_validator(mode="after")
    def _one_source(self) -> NgramRequest:
        if (self.corpus is None) == (self.text is None):
            raise ValueError("give exactly one of `corpus` and `text`")
        if (
            self.text is not None
            and len(self.text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES
        ):
            raise ValueError(f"text is over {MAX_TEXT_BYTES} bytes")
        return self


class NgramEntryOut(ResponseBody):
    tokens: list[str]
    count: int
    frequency: float = Field(description="count / total n-grams of this order")


class NgramTableOut(ResponseBody):
    n: int
    total: int = Field(description="n-grams in the text")
    unique: int = Field(description="distinct n-grams")
    entries: list[NgramEntryOut]


class ZipfOut(ResponseBody):
    exponent: float = Field(description="alpha in count ~ rank^-alpha, fitted on the unigrams")
    intercept: float
    r2: float


class NgramResponse(ResponseBody):
    source: str = Field(description="corpus name, 'text', or 'file' (an upload)")
    level: str
    tokens: int
    tables: list[NgramTableOut]
    zipf: ZipfOut | None


class NgramPlotRequest(NgramRequest, PlotOptions):
    pass


class NgramPlotUpload(NgramOptions, PlotOptions):
    pass
