"""The named corpora: each `NAME.txt` in the data dir (RNNLM_DATA_DIR) whose NAME is a valid
corpus name, and the book."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import Field

from app.deps import ServicesDep
from app.errors import responses
from app.schemas import ResponseBody

router = APIRouter(prefix="/v1/corpora", tags=["n-grams"])


class CorpusCard(ResponseBody):
    name: str = Field(description="what `corpus` takes in /v1/ngrams and its plot")
    source: Literal["data_dir", "builtin"] = Field(
        description="a file in the data dir, or the book (fetched on first use if missing)"
    )
    size: int | None = Field(description="bytes; null for a built-in corpus not fetched yet")
    sha256: str | None


class CorpusList(ResponseBody):
    data: list[CorpusCard]


@router.get("", response_model=CorpusList, responses=responses(401, 503))
async def list_corpora(services: ServicesDep) -> CorpusList:
    """Every named corpus with its size and sha256 (each file hashed once per version)."""
    listing = await services.jobs.run(services.corpora.listing)
    return CorpusList(
        data=[
            CorpusCard(name=c.name, source=c.source, size=c.size, sha256=c.sha256) for c in listing
        ]
    )
