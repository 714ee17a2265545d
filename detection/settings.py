"""Every setting of the service, parsed, typed and defaulted in one place.

Settings come from the ``[app:main]`` section of an ``.ini`` file (keys prefixed ``detection.``);
a few deploy-time values may be overridden from the environment (see ``ENVIRONMENT_OVERRIDES``).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

PREFIX = "detection."

# Environment variable -> setting it overrides (deploy-time values only).
ENVIRONMENT_OVERRIDES = {
    "DETECTION_UPLOADS_DIR": "uploads_dir",
    "DETECTION_CHECKPOINTS_DIR": "checkpoints_dir",
    "DETECTION_DATASETS_DIR": "datasets_dir",
    "DETECTION_MODELS_FILE": "models_file",
    "DETECTION_DEFAULT_MODEL": "default_model",
    "DETECTION_DEVICE": "device",
    "DETECTION_API_KEYS": "api_keys",
    "DETECTION_PUBLIC_URL": "public_url",
    "DETECTION_REDIS_URL": "redis_url",
    "DETECTION_WORKERS": "workers",
    "DETECTION_CALLBACK_SECRET": "callback_secret",
}
MIN_SECRET_LENGTH = 16


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    config_file: Path | None
    uploads_dir: Path
    checkpoints_dir: Path
    datasets_dir: Path
    models_file: Path
    default_model: str
    default_threshold: float
    max_upload_bytes: int
    max_pixels: int
    max_queue: int
    queue: str
    redis_url: str
    workers: int  # 0: auto
    device: str
    runtime: str
    torch_threads: int
    gpu_batch_size: int
    idle_exit_seconds: float
    poll_interval_seconds: float
    max_loaded_models: int
    max_worker_memory_mb: int
    retention_hours: float
    spawn_worker: bool
    sync_timeout_seconds: float
    max_waiting_requests: int
    job_timeout_seconds: float
    download_timeout_seconds: float
    training_timeout_seconds: float
    auto_promote: bool
    model_load_timeout_seconds: float
    heartbeat_timeout_seconds: float
    max_storage_mb: int
    max_datasets: int
    max_dataset_images: int
    max_dataset_classes: int
    max_datasets_mb: int
    max_import_mb: int
    max_review_items: int
    max_review_mb: int
    prune_interval_seconds: float
    public_url: str
    allowed_origins: tuple[str, ...]
    api_keys: tuple[str, ...]
    metrics_public: bool
    log_format: str
    callback_hosts: tuple[str, ...]
    callback_secret: str
    callback_private: bool
    callback_timeout_seconds: float
    callback_retry_seconds: float
    max_video_seconds: float
    max_video_frame_pixels: int
    max_video_frames: int
    video_fps: float
    video_timeout_seconds: float
    long_lane_idle_seconds: float
    max_batch_images: int
    max_batch_mb: int
    batch_timeout_seconds: float

    @property
    def max_storage_bytes(self) -> int | None:
        return self.max_storage_mb * 2**20 if self.max_storage_mb else None

    @property
    def metrics_dir(self) -> Path:
        """Where each process keeps its Prometheus counts (``detection.telemetry``): in memory
        (/dev/shm) where there is one, not beside the uploads: they are memory-mapped files, and
        a full disk would kill a process that writes one. One per uploads directory."""
        key = hashlib.sha256(str(self.uploads_dir).encode()).hexdigest()[:16]
        return metrics_base() / f"{METRICS_PREFIX}{key}"

    @property
    def spool_dir(self) -> Path:
        return self.uploads_dir / ".queue"

    @property
    def onnx_cache_dir(self) -> Path:
        return self.checkpoints_dir / ".onnx"

    @property
    def daemon_lock_file(self) -> Path:
        """Held by the live detection daemon; its modification time is the daemon's heartbeat."""
        return self.uploads_dir / ".daemon.lock"

    @property
    def daemon_state_file(self) -> Path:
        return self.uploads_dir / ".daemon.json"

    @property
    def daemon_log_file(self) -> Path:
        return self.uploads_dir / ".daemon.log"

    @property
    def daemon_stderr_file(self) -> Path:
        """The daemon's own stdout/stderr (what logging cannot catch, e.g. a crash)."""
        return self.uploads_dir / ".daemon.stderr"


PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where web.py and mmdetectionl.py are
METRICS_PREFIX = "detection-metrics-"


def metrics_base() -> Path:
    """Where services keep their metrics directories: in memory (/dev/shm) where there is one."""
    shared_memory = Path("/dev/shm")
    return shared_memory if shared_memory.is_dir() else Path(tempfile.gettempdir())
PROJECT_MODELS_FILE = PROJECT_ROOT / "configs" / "models.toml"
Parser = Callable[[str, str, Path], Any]  # (raw value, key, the ini's folder) -> value


class Setting(NamedTuple):
    default: str  # as an .ini would write it
    parse: Parser


def path(raw: str, key: str, base: Path) -> Path:
    """A path; relative ones are relative to the ini's folder."""
    resolved = Path(os.path.expanduser(raw.strip()))
    return (resolved if resolved.is_absolute() else base / resolved).resolve()


def models_path(raw: str, key: str, base: Path) -> Path:
    return path(raw, key, base) if raw.strip() else PROJECT_MODELS_FILE


def text(raw: str, key: str, base: Path) -> str:
    return raw.strip()


def number(kind: type, low: float, high: float) -> Parser:
    def parse(raw: str, key: str, base: Path):
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{PREFIX}{key} must be a {kind.__name__}, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{PREFIX}{key} must be between {low} and {high}, got {value}")
        return value
    return parse


def choice(*choices: str) -> Parser:
    def parse(raw: str, key: str, base: Path) -> str:
        if raw.strip() not in choices:
            raise SettingsError(f"{PREFIX}{key} must be one of {', '.join(choices)}, got {raw!r}")
        return raw.strip()
    return parse


def worker_count(raw: str, key: str, base: Path) -> int:
    """A number of workers, or ``auto`` (0 here: the daemon makes it one per GPU, else one)."""
    return 0 if raw.strip() == "auto" else number(int, 1, 256)(raw, key, base)


def flag(raw: str, key: str, base: Path) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{key} must be true or false, got {raw!r}")


def words(raw: str, key: str, base: Path) -> tuple[str, ...]:
    """A list: words separated by spaces or commas."""
    return tuple(raw.replace(",", " ").split())


def url(raw: str, key: str, base: Path) -> str:
    value = raw.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{PREFIX}{key} takes http(s)://host[:port] URLs, got {raw!r}")
    return value


def callback_hosts(raw: str, key: str, base: Path) -> tuple[str, ...]:
    """Hosts callbacks may go to: ``host`` (its scheme's port), ``host:port``, ``host:*``."""
    hosts = words(raw, key, base)
    for host in hosts:
        if not re.fullmatch(r"[0-9A-Fa-f:.]+" if host.count(":") > 1 and host[0] != "["
                            else r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(\d{1,5}|\*))?", host):
            raise SettingsError(f"{PREFIX}{key} takes host, host:port or host:* (no scheme, "
                                f"no path), got {host!r}")
    return hosts


def redis_url(raw: str, key: str, base: Path) -> str:
    value = raw.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"{PREFIX}{key} takes redis://, rediss:// or unix:// URLs, got {raw!r}")
    return value


def urls(raw: str, key: str, base: Path) -> tuple[str, ...]:
    return tuple(url(word, key, base) for word in words(raw, key, base))


# Every detection.* key: its default and its parser (docs/operations.md's settings table lists
# each one; tests/unit/test_settings.py keeps the two in step).
SETTINGS: dict[str, Setting] = {
    "uploads_dir": Setting("uploads", path),
    "checkpoints_dir": Setting("checkpoints", path),
    "datasets_dir": Setting("datasets", path),
    "models_file": Setting("", models_path),
    "default_model": Setting("rtmdet_tiny", text),
    "default_threshold": Setting("0.3", number(float, 0.0, 1.0)),
    "max_upload_bytes": Setting("20971520", number(int, 1, 2**40)),
    "max_pixels": Setting("40000000", number(int, 1, 2**40)),
    "max_queue": Setting("100", number(int, 1, 1_000_000)),
    "queue": Setting("spool", choice("spool", "rq")),
    "redis_url": Setting("redis://127.0.0.1:6379/0", redis_url),
    "workers": Setting("1", worker_count),
    "device": Setting("auto", text),
    "runtime": Setting("auto", choice("auto", "onnxruntime", "torch")),
    "torch_threads": Setting("0", number(int, 0, 1024)),
    "gpu_batch_size": Setting("8", number(int, 1, 256)),
    "idle_exit_seconds": Setting("600", number(float, 0, 10**9)),
    "poll_interval_seconds": Setting("0.01", number(float, 0.001, 60)),
    "max_loaded_models": Setting("2", number(int, 1, 100)),
    "max_worker_memory_mb": Setting("3072", number(int, 64, 10**7)),
    "retention_hours": Setting("24", number(float, 0, 10**6)),
    "spawn_worker": Setting("true", flag),
    "sync_timeout_seconds": Setting("30", number(float, 0.1, 3600)),
    "max_waiting_requests": Setting("16", number(int, 1, 100_000)),
    "job_timeout_seconds": Setting("120", number(float, 1, 10**6)),
    "download_timeout_seconds": Setting("3600", number(float, 1, 10**6)),
    "training_timeout_seconds": Setting("3600", number(float, 1, 10**7)),
    "auto_promote": Setting("false", flag),
    "model_load_timeout_seconds": Setting("600", number(float, 1, 10**6)),
    "heartbeat_timeout_seconds": Setting("30", number(float, 1, 10**6)),
    "max_storage_mb": Setting("10240", number(int, 0, 2**40)),
    "prune_interval_seconds": Setting("60", number(float, 1, 10**6)),
    "max_datasets": Setting("100", number(int, 1, 100_000)),
    "max_dataset_images": Setting("5000", number(int, 1, 1_000_000)),
    "max_dataset_classes": Setting("100", number(int, 1, 10_000)),
    "max_datasets_mb": Setting("2048", number(int, 1, 2**40)),
    "max_import_mb": Setting("128", number(int, 1, 2**40)),
    "max_review_items": Setting("200", number(int, 1, 1_000_000)),
    "max_review_mb": Setting("256", number(int, 1, 2**40)),
    "public_url": Setting("", url),
    "allowed_origins": Setting("", urls),
    "api_keys": Setting("", words),
    "metrics_public": Setting("false", flag),
    "log_format": Setting("text", choice("text", "json")),
    "callback_hosts": Setting("", callback_hosts),
    "callback_secret": Setting("", text),
    "callback_private": Setting("false", flag),
    "callback_timeout_seconds": Setting("10", number(float, 0.1, 600)),
    "callback_retry_seconds": Setting("3600", number(float, 0, 10**6)),
    "max_video_seconds": Setting("300", number(float, 1, 10**6)),
    "max_video_frame_pixels": Setting("8294400", number(int, 1, 2**32)),
    "max_video_frames": Setting("3000", number(int, 1, 10**7)),
    "video_fps": Setting("5", number(float, 0.1, 30)),
    "video_timeout_seconds": Setting("1800", number(float, 1, 10**7)),
    "long_lane_idle_seconds": Setting("60", number(float, 0, 10**6)),
    "max_batch_images": Setting("500", number(int, 1, 100_000)),
    "max_batch_mb": Setting("256", number(int, 1, 2**40)),
    "batch_timeout_seconds": Setting("1800", number(float, 1, 10**7)),
}


def parse_settings(app_settings: Mapping[str, str], config_file: str | None = None,
                   environ: Mapping[str, str] = os.environ) -> Settings:
    """Build ``Settings`` from the ini's app settings (``detection.*`` keys) and the environment;
    refuse keys it does not know (a typo would otherwise pass for a default)."""
    raw = {k[len(PREFIX):]: v for k, v in app_settings.items() if k.startswith(PREFIX)}
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise SettingsError(f"unknown setting {', '.join(PREFIX + k for k in unknown)}; "
                            f"the settings are listed in docs/operations.md")
    for variable, key in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable):
            raw[key] = environ[variable]
    config_path = Path(config_file).resolve() if config_file else None
    base = config_path.parent if config_path else Path.cwd()  # relative paths: from the ini's folder
    values = {key: setting.parse(str(raw.get(key, setting.default)), key, base)
              for key, setting in SETTINGS.items()}
    if values["callback_hosts"] and len(values["callback_secret"]) < MIN_SECRET_LENGTH:
        raise SettingsError(f"{PREFIX}callback_hosts needs {PREFIX}callback_secret (or "
                            f"DETECTION_CALLBACK_SECRET), at least {MIN_SECRET_LENGTH} "
                            "characters: callbacks are signed with it")
    return Settings(config_file=config_path, **values)


def load_settings(config_file: str | Path) -> Settings:
    """The settings of an ``.ini`` file's ``[app:main]`` (for processes other than web)."""
    from pyramid.paster import get_appsettings
    return parse_settings(get_appsettings(str(config_file)), str(config_file))
