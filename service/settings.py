"""Service settings: keyword arguments (CLI options) > ``AUTOAUG_*`` environment variables > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

MiB = 1 << 20


class Settings(BaseSettings):
    """What ``autoaug serve`` reads; every field is also ``AUTOAUG_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="AUTOAUG_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="interface to listen on (0.0.0.0: all)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    published_dir: Path = Field(Path("published"), description="what the publish stage writes")
    mlflow_ui_url: str | None = Field(
        None, description="base URL of the MLflow UI, for links to runs (e.g. http://localhost:5000)"
    )
    device: str = Field("cpu", description="torch device for inference: cpu, cuda, cuda:N or auto")
    precision: str = Field(
        "auto", pattern="^(auto|fp32|bf16)$",
        description="inference precision: auto = bf16 where it runs natively (CPUs with AVX-512 BF16 or "
        "AMX, CUDA), else fp32",
    )
    max_files: int = Field(16, ge=1, le=1024, description="most images in one /predict request")
    max_file_bytes: int = Field(8 * MiB, ge=1, description="largest accepted upload, per file")
    max_image_pixels: int = Field(
        4096 * 4096, ge=1, description="largest accepted image (width x height) before decoding"
    )
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug|trace)$")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (each re-reads published/)")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", value):
            raise ValueError(f"expected cpu, cuda, cuda:N, mps or auto, got {value!r}")
        # Asked for an accelerator this machine lacks: say so at start-up, not at the first request.
        if value not in ("auto", "cpu"):  # cpu is always there (and needs no torch import)
            from pipeline.device import missing_device

            have = missing_device(value)
            if have is not None:
                raise ValueError(f"{value} asked for, but this machine has {have}; use cpu or auto")
        return value

    @field_validator("mlflow_ui_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value.rstrip("/")

    @property
    def max_request_bytes(self) -> int:
        """Whole request body: every file at its limit plus room for the multipart framing."""
        return self.max_files * self.max_file_bytes + MiB

    def as_environment(self) -> dict[str, str]:
        """These settings as ``AUTOAUG_*`` variables: what a worker process reads them back from."""
        return {f"AUTOAUG_{name.upper()}": str(value)
                for name, value in self.model_dump().items() if value is not None}

    def autocast_dtype(self) -> Any:
        """The torch dtype inference autocasts to on this device, or None for plain fp32."""
        import torch

        from pipeline.device import autocast_dtype

        return autocast_dtype(self.precision, torch.device(self.torch_device()))

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        from pipeline.device import pick_device

        return pick_device().type


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``overrides`` (None means: not given), the environment and the defaults.

    A bad value raises ConfigError with one line naming the setting, its env var and the problem.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        source = "option" if name in given else f"AUTOAUG_{name.upper()}"
        value = given.get(name, error.get("input"))
        raise ConfigError(f"serve: {name} ({source}) = {value!r}: {error['msg']}") from None
