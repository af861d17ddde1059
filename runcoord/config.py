"""Settings, read from the environment (prefix ``RUNCOORD_``) with sane local defaults.

Every setting is documented in the README's "Configuration" table; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout this code runs from, when it does (tests, make, bench); in an installed wheel
# it is site-packages and means nothing: nothing but home() may rely on it.
REPO_ROOT = PACKAGE_DIR.parent
# The configuration files a fresh install starts from (tools.yaml, topics.yaml, providers.yaml),
# shipped inside the package; a file of the same name in RUNCOORD_HOME takes their place.
DEFAULTS_DIR = PACKAGE_DIR / "defaults"


def default_home() -> Path:
    """RUNCOORD_HOME's default: the checkout when running from one (its `.state/` and its
    configuration files beside the code), else ``~/.runcoord`` for an installed package."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "tools.yaml").is_file():
        return REPO_ROOT
    return Path.home() / ".runcoord"


def _config_file(home: Path, name: str) -> Path:
    mine = home / name
    return mine if mine.is_file() else DEFAULTS_DIR / name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNCOORD_", extra="ignore", populate_by_name=True)

    # Where the configuration files are looked for and, by default, the local stack's state.
    home: Path = Field(default_factory=default_home)
    # Where the local stack keeps its data, logs and pid files (ignored by git): HOME/.state.
    state_dir: Path = Path()
    # Kafka: the first broker's client port; broker i listens on kafka_port + i.
    kafka_port: int = 9092
    kafka_brokers: int = 1
    kafka_heap: str = "512m"
    kafka_version: str = "4.1.1"
    # Set to use a broker that is already running instead of the local one.
    bootstrap_servers: str | None = None
    # PostgreSQL and Redis: a DSN/URL given here is used as is; otherwise the local stack's.
    postgres_dsn: str | None = None
    postgres_port: int = 55432
    redis_url: str | None = None
    redis_port: int = 56379
    # The topic declarations: HOME/topics.yaml, else the packaged default.
    topics_file: Path = Path()
    # The provider's base URL (…/v1), shared by the agent API and the executors; the default is
    # the local simulator (`runcoord sim provider`).
    provider_url: str = "http://127.0.0.1:8390/v1"
    # Which run protocol each assistant's turns use (runcoord/providers.py): HOME/providers.yaml,
    # else the packaged default (every assistant auto).
    providers_file: Path = Path()
    # How runs are observed. stream: the provider executor watches a Responses run by its
    # event stream (resumed after a drop: the provider tells us the moment it changes), and
    # an Assistants create or submission is sent with stream=true and follows the run until
    # the model stops working, reporting that state with its outcome. poll: retrieve with
    # backoff, never faster than the provider's poll-after hint.
    observe: Literal["poll", "stream"] = "stream"
    # Where --metrics-port listens: loopback by default; 0.0.0.0 in a container (compose.yaml).
    metrics_host: str = "127.0.0.1"
    # Traces (runcoord/tracing.py): none | otlp | console | file:PATH.
    otel_exporter: str = "none"
    # The tool registry every process reads: HOME/tools.yaml, else the packaged default.
    tools_file: Path = Path()
    # The sandbox (or real) tool gateway the tool executor calls.
    gateway_url: str = "http://127.0.0.1:8391"
    # A tool read, or a write with idempotency: key, unanswered after this long is sent again
    # beside it with the same key (runcoord/tools/executor.py); 0: never.
    tool_hedge_ms: int = Field(default=500, ge=0)
    # The provider's API key; OPENAI_API_KEY as the SDK names it, or RUNCOORD_OPENAI_API_KEY.
    openai_api_key: str = Field(
        default="sk-local",
        validation_alias=AliasChoices("RUNCOORD_OPENAI_API_KEY", "OPENAI_API_KEY"),
    )
    # The secret provider webhooks are signed with (the agent API checks it).
    openai_webhook_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RUNCOORD_OPENAI_WEBHOOK_SECRET", "OPENAI_WEBHOOK_SECRET"),
    )
    # Every product process serves Prometheus /metrics on this port when set (--metrics-port).
    metrics_port: int | None = None
    # Test hook: kill|stop|hang@POINT[:N] makes a process fault itself (runcoord/faults.py).
    fault_at: str | None = None
    # Logs: text, or json (one object per line, with the correlation ids); and the level.
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    # The agent API's limits (runcoord/api/limits.py). Per tenant: a token bucket of requests
    # refilled at api_rate_per_s (0: no limit) holding at most api_rate_burst, and at most
    # api_streams_per_tenant open event streams (both counted in Redis; with Redis down,
    # requests are allowed). PostgreSQL: a pool of api_db_pool_min..api_db_pool_max connections
    # per API process; a request waits at most api_db_pool_timeout_s for one (then 503).
    api_rate_per_s: float = 20.0
    api_rate_burst: int = 100
    api_streams_per_tenant: int = 16
    api_db_pool_min: int = 2
    api_db_pool_max: int = 10
    api_db_pool_timeout_s: float = 10.0
    # Outbound webhooks (runcoord/api/hooks.py) may target private, loopback and link-local
    # addresses (never the cloud metadata address): the API's registration check and
    # `runcoord api deliver` both read it. Off: only public addresses.
    webhooks_allow_private: bool = False

    @model_validator(mode="after")
    def _paths_from_home(self) -> Settings:
        # An unset path (Path()) follows HOME; one set explicitly is kept as given.
        if self.state_dir == Path():
            self.state_dir = self.home / ".state"
        for field, name in (
            ("topics_file", "topics.yaml"),
            ("providers_file", "providers.yaml"),
            ("tools_file", "tools.yaml"),
        ):
            if getattr(self, field) == Path():
                setattr(self, field, _config_file(self.home, name))
        return self

    @property
    def bootstrap(self) -> str:
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return ",".join(f"127.0.0.1:{self.kafka_port + i}" for i in range(self.kafka_brokers))

    @property
    def dsn(self) -> str:
        if self.postgres_dsn:
            return self.postgres_dsn
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"redis://127.0.0.1:{self.redis_port}/0"


def load() -> Settings:
    return Settings()
