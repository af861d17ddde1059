"""Where each component of the local stack keeps its files, all under ``Settings.state_dir``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runcoord.config import Settings


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @classmethod
    def of(cls, settings: Settings) -> StackPaths:
        return cls(root=settings.state_dir.resolve())

    # Kafka ---------------------------------------------------------------
    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    def kafka_libs(self, version: str) -> Path:
        # Versioned, so changing RUNCOORD_KAFKA_VERSION fetches a new set instead of mixing jars.
        return self.kafka / f"libs-{version}"

    @property
    def kafka_cluster_file(self) -> Path:
        return self.kafka / "cluster.json"

    def broker(self, index: int) -> Path:
        return self.kafka / f"broker-{index}"

    # PostgreSQL ----------------------------------------------------------
    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    # Redis ---------------------------------------------------------------
    @property
    def redis(self) -> Path:
        return self.root / "redis"
