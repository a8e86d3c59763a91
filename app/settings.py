"""Service settings from `RNNLM_*` environment variables (pydantic-settings).

No instance is built at import time: `create_app(settings)` takes one, and `get_settings()`
builds the environment's on first use, so tests can pass their own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.precision import Precision

MAX_BATCH_SIZE = 4096
DEVICE_LIMITS = {"cuda": (1024, 4096), "cpu": (64, 256)}  # (batch, queue) by device type


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RNNLM_", extra="ignore")

    checkpoint_dir: Path = Field(Path("checkpoints"), description="directory of bundles")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    default_model: str | None = Field(
        None,
        description="LM used when a request names none (default: char-mix, else char-lstm)",
    )
    data_dir: Path | None = Field(None, description="directory holding named corpora")
    cache_dir: Path = Field(Path.home() / ".cache" / "rnnlm", description="corpus downloads")
    allow_download: bool = Field(True, description="download a named corpus missing locally")
    api_key: SecretStr | None = Field(
        None, description="when set and not empty, /v1/* needs this bearer key"
    )
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads")

    # Scheduler and load limits.
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="sequences decoded per step per model (default: 1024 on CUDA, 64 on the CPU)",
    )
    max_queue: int | None = Field(
        None,
        ge=0,
        description="sequences waiting beyond the batch (default: 4096 on CUDA, 256 on the CPU)",
    )
    precision: Precision = Field(
        "fp32",
        description="weights generation decodes with when a request names none: fp32, bf16, "
        "int8 (int8 on the CPU only)",
    )
    prefill_slice_s: float = Field(
        0.002,
        ge=0,
        description="time a decoding step may spend encoding new prompts (at least one pass)",
    )
    max_concurrent_scoring: int = Field(2, ge=1, description="perplexity/n-gram jobs at once")
    request_timeout_s: float = Field(120.0, gt=0, description="per-request time limit")
    max_body_bytes: int = Field(3 * 1024 * 1024, ge=1024, description="largest request body")
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body that stops arriving this long gets 408"
    )
    # The HTTP server's limits (`python -m app`, app/server.py).
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request line and headers not in within this get 408"
    )
    max_connections: int = Field(
        512, ge=1, description="connections or requests in progress; beyond, 503"
    )
    keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections close after")
    shutdown_grace_s: int = Field(20, ge=0, description="in-flight requests' time on SIGTERM")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        """`RNNLM_API_KEY=` (compose passes an empty value when the host sets none)."""
        empty = value == "" or (isinstance(value, SecretStr) and not value.get_secret_value())
        return None if empty else value

    def batch_limits(self, device: torch.device) -> tuple[int, int]:
        """(max batch, max queue): as set, or the device's defaults. A GPU step costs about
        the same for 1 row and 1,024, so a GPU batches wide; on a CPU a row costs real
        arithmetic, and 64 keeps each step short."""
        batch, queue = DEVICE_LIMITS["cuda" if device.type == "cuda" else "cpu"]
        return (
            self.max_batch_size if self.max_batch_size is not None else batch,
            self.max_queue if self.max_queue is not None else queue,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
