"""Every setting of the service, parsed, typed and defaulted in one place.

Settings come from the ``[app:main]`` section of an ``.ini`` file (keys prefixed ``detection.``);
a few deploy-time values may be overridden from the environment (see ``ENVIRONMENT_OVERRIDES``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

PREFIX = "detection."

# Environment variable -> setting it overrides (deploy-time values only).
ENVIRONMENT_OVERRIDES = {
    "DETECTION_UPLOADS_DIR": "uploads_dir",
    "DETECTION_CHECKPOINTS_DIR": "checkpoints_dir",
    "DETECTION_MODELS_FILE": "models_file",
    "DETECTION_DEFAULT_MODEL": "default_model",
    "DETECTION_DEVICE": "device",
    "DETECTION_API_KEYS": "api_keys",
    "DETECTION_PUBLIC_URL": "public_url",
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    config_file: Path | None
    uploads_dir: Path
    checkpoints_dir: Path
    models_file: Path
    default_model: str
    default_threshold: float
    max_upload_bytes: int
    max_pixels: int
    max_queue: int
    device: str
    runtime: str
    torch_threads: int
    idle_exit_seconds: float
    poll_interval_seconds: float
    max_loaded_models: int
    max_worker_memory_mb: int
    retention_hours: float
    spawn_worker: bool
    sync_timeout_seconds: float
    max_waiting_requests: int
    job_timeout_seconds: float
    model_load_timeout_seconds: float
    heartbeat_timeout_seconds: float
    max_storage_mb: int
    prune_interval_seconds: float
    public_url: str
    allowed_origins: tuple[str, ...]
    api_keys: tuple[str, ...]

    @property
    def max_storage_bytes(self) -> int | None:
        return self.max_storage_mb * 2**20 if self.max_storage_mb else None

    @property
    def spool_dir(self) -> Path:
        return self.uploads_dir / ".queue"

    @property
    def onnx_cache_dir(self) -> Path:
        return self.checkpoints_dir / ".onnx"

    @property
    def worker_lock_file(self) -> Path:
        return self.uploads_dir / ".worker.lock"

    @property
    def worker_state_file(self) -> Path:
        return self.uploads_dir / ".worker.json"

    @property
    def worker_log_file(self) -> Path:
        return self.uploads_dir / ".worker.log"

    @property
    def worker_stderr_file(self) -> Path:
        """The daemon's own stdout/stderr (what logging cannot catch, e.g. a crash)."""
        return self.uploads_dir / ".worker.stderr"


def _path(raw: str, base: Path) -> Path:
    path = Path(os.path.expanduser(raw))
    return (path if path.is_absolute() else base / path).resolve()


def _number(raw: Mapping[str, str], key: str, default: float, kind: type, low: float, high: float):
    value = raw.get(key, default)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{PREFIX}{key} must be a {kind.__name__}, got {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{PREFIX}{key} must be between {low} and {high}, got {number}")
    return number


def _choice(raw: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = str(raw.get(key, default)).strip()
    if value not in choices:
        raise SettingsError(f"{PREFIX}{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(raw: Mapping[str, str], key: str, default: bool) -> bool:
    value = str(raw.get(key, default)).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{key} must be true or false, got {value!r}")


def _words(raw: str) -> tuple[str, ...]:
    """A list setting: words separated by spaces or commas."""
    return tuple(str(raw).replace(",", " ").split())


def _url(raw: str) -> str:
    url = str(raw).strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError(f"{PREFIX}public_url and allowed_origins take http(s)://host[:port] "
                            f"URLs, got {raw!r}")
    return url


def parse_settings(app_settings: Mapping[str, str], config_file: str | None = None,
                   environ: Mapping[str, str] = os.environ) -> Settings:
    """Build ``Settings`` from the ini's app settings (``detection.*`` keys) and the environment."""
    raw = {k[len(PREFIX):]: v for k, v in app_settings.items() if k.startswith(PREFIX)}
    for variable, key in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable):
            raw[key] = environ[variable]
    config_path = Path(config_file).resolve() if config_file else None
    base = config_path.parent if config_path else Path.cwd()  # relative paths: from the ini's folder
    default_models = Path(__file__).resolve().parent.parent / "configs" / "models.toml"
    return Settings(
        config_file=config_path,
        uploads_dir=_path(raw.get("uploads_dir", "uploads"), base),
        checkpoints_dir=_path(raw.get("checkpoints_dir", "checkpoints"), base),
        models_file=_path(raw["models_file"], base) if "models_file" in raw else default_models,
        default_model=raw.get("default_model", "rtmdet_tiny").strip(),
        default_threshold=_number(raw, "default_threshold", 0.3, float, 0.0, 1.0),
        max_upload_bytes=_number(raw, "max_upload_bytes", 20 * 1024 * 1024, int, 1, 2**40),
        max_pixels=_number(raw, "max_pixels", 40_000_000, int, 1, 2**40),
        max_queue=_number(raw, "max_queue", 100, int, 1, 1_000_000),
        device=raw.get("device", "auto").strip(),
        runtime=_choice(raw, "runtime", "onnxruntime", ("onnxruntime", "torch")),
        torch_threads=_number(raw, "torch_threads", 0, int, 0, 1024),
        idle_exit_seconds=_number(raw, "idle_exit_seconds", 600, float, 0, 10**9),
        poll_interval_seconds=_number(raw, "poll_interval_seconds", 0.01, float, 0.001, 60),
        max_loaded_models=_number(raw, "max_loaded_models", 2, int, 1, 100),
        max_worker_memory_mb=_number(raw, "max_worker_memory_mb", 3072, int, 64, 10**7),
        retention_hours=_number(raw, "retention_hours", 24, float, 0, 10**6),
        spawn_worker=_flag(raw, "spawn_worker", True),
        sync_timeout_seconds=_number(raw, "sync_timeout_seconds", 30, float, 0.1, 3600),
        max_waiting_requests=_number(raw, "max_waiting_requests", 16, int, 1, 100_000),
        job_timeout_seconds=_number(raw, "job_timeout_seconds", 120, float, 1, 10**6),
        model_load_timeout_seconds=_number(raw, "model_load_timeout_seconds", 600, float, 1,
                                           10**6),
        heartbeat_timeout_seconds=_number(raw, "heartbeat_timeout_seconds", 30, float, 1,
                                          10**6),
        max_storage_mb=_number(raw, "max_storage_mb", 10240, int, 0, 2**40),
        prune_interval_seconds=_number(raw, "prune_interval_seconds", 60, float, 1, 10**6),
        public_url=_url(raw.get("public_url", "")),
        allowed_origins=tuple(_url(o) for o in _words(raw.get("allowed_origins", ""))),
        api_keys=_words(raw.get("api_keys", "")),
    )


def load_settings(config_file: str | Path) -> Settings:
    """The settings of an ``.ini`` file's ``[app:main]`` (for processes other than web)."""
    from pyramid.paster import get_appsettings
    return parse_settings(get_appsettings(str(config_file)), str(config_file))
