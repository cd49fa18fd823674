"""Data: the episode record, the crash-safe episode store and chunked replay sampling."""

from lwd.data.episode import (
    NO_POLICY,
    SOURCES,
    Episode,
    EpisodeValidationError,
    validate,
)
from lwd.data.replay import ChunkBatch, ChunkReplay, MixedReplay, ReplayConfig
from lwd.data.store import (
    EpisodeConflictError,
    EpisodeRecord,
    EpisodeStore,
    Receipt,
    StoreError,
)

__all__ = [
    "NO_POLICY",
    "SOURCES",
    "ChunkBatch",
    "ChunkReplay",
    "Episode",
    "EpisodeConflictError",
    "EpisodeRecord",
    "EpisodeStore",
    "EpisodeValidationError",
    "MixedReplay",
    "Receipt",
    "ReplayConfig",
    "StoreError",
    "validate",
]
