"""Where things live. One typed object, read from `TABLOOP_*` environment variables when asked for."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Storage, tracking and naming for every flow. Defaults run on one laptop with nothing installed."""

    model_config = SettingsConfigDict(env_prefix="TABLOOP_", extra="ignore")

    storage_url: str = Field(
        default=str(PROJECT_ROOT / ".storage"),
        description="Local folder or s3://bucket/prefix for data snapshots, schemas, reports and logs.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint for non-AWS stores (moto, MinIO); None means AWS."
    )
    s3_connect_timeout_s: float = Field(default=5, gt=0, description="Seconds to open a connection to S3.")
    s3_read_timeout_s: float = Field(
        default=10, gt=0, description="Seconds S3 may stay silent mid-request before the attempt is abandoned."
    )
    s3_max_attempts: int = Field(
        default=1,
        ge=1,
        description="botocore attempts per S3 request; s3fs itself retries a timed-out request 5 times with "
        "backoff. With these defaults a read from a stalled S3 fails in about 2 minutes (measured 106 s); "
        "botocore's own (60 s timeouts, 5 attempts, inside s3fs's 5) would hang for the better part of an hour.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; None means a SQLite file in the local state folder."
    )
    mlflow_artifact_location: str | None = Field(
        default=None, description="Artifact root for new experiments; None means <storage_url>/mlartifacts."
    )
    model_name: str | None = Field(
        default=None,
        description="The model flows and the server work on when none is named; None: the dataset's name "
        "(the demo's model for the demo).",
    )
    experiment_name: str | None = Field(default=None, description="MLflow experiment; None: the model's name.")
    optuna_storage: str | None = Field(
        default=None,
        description="Shared Optuna storage for sweeps that name none (postgresql://...); None: in memory, "
        "or the sweep's own optuna_storage.",
    )
    models_dir: Path = Field(
        default=PROJECT_ROOT / "models",
        description="The folder of model specs (<name>.yaml): the models the server serves and flows find by name.",
    )
    features_dir: Path = Field(
        default=PROJECT_ROOT / "features",
        description="The folder of feature definitions (<name>.py, each with definitions(settings)) for the "
        "feature store.",
    )
    feature_online_store: str | None = Field(
        default=None,
        description="The feature store's online store: a redis://host:port URL; None: a SQLite file in the local "
        "state folder.",
    )
    mlflow_http_max_retries: int = Field(
        default=4,
        ge=0,
        description="Retries of one MLflow HTTP request, backing off 2, 4, 8, 16 s: a server restart is ridden "
        "out, a dead server fails the run in about a minute. MLflow's own default (7) waits about 4 minutes "
        "per request. MLFLOW_HTTP_REQUEST_MAX_RETRIES, when set, wins.",
    )
    serving_url: str = Field(
        default="http://127.0.0.1:8000", description="The model API, for the post-promotion smoke test."
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token of the model API (serving/config.yaml api_token_env), for callers."
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None, description="Where failure alerts are POSTed (Slack-compatible JSON); None: storage only."
    )

    @property
    def is_remote_storage(self) -> bool:
        return "://" in self.storage_url and not self.storage_url.startswith("file://")

    @property
    def local_state_dir(self) -> Path:
        """Local folder for files that must live on this machine (the embedded SQLite stores)."""
        if self.is_remote_storage:
            return PROJECT_ROOT / ".storage"
        return Path(self.storage_url.removeprefix("file://"))

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.local_state_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Artifact root for new experiments; None lets an MLflow tracking server use its own."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        if self.is_remote_storage:
            return f"{self.storage_url.rstrip('/')}/mlartifacts"
        return (self.local_state_dir / "mlartifacts").as_uri()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***: safe to record in tags, study attributes and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def get_settings(**overrides: object) -> Settings:
    """Build settings now, from the environment, with explicit overrides winning."""
    return Settings(**overrides)
