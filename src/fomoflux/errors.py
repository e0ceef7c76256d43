"""Error types. Every message names the file, key or value at fault."""


class FomofluxError(Exception):
    """Base class of every error fomoflux raises on bad input."""


class ConfigError(FomofluxError):
    """The configuration is invalid (names the key and the value)."""


class DataError(FomofluxError):
    """A dataset, shard, archive or sample is missing or corrupt (names the file and sample)."""


class DownloadError(DataError):
    """A download failed: dead URL, wrong checksum, not an archive (names the URL and file)."""


class CheckpointError(FomofluxError):
    """A model checkpoint is missing, unreadable or does not match its architecture (names the file)."""
