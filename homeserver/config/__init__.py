"""The homeserver configuration: Synapse's homeserver.yaml names, typed and checked once.

`load_config(path)` reads a YAML file and returns a frozen `Config` made of one frozen
dataclass per section. It never stops at the first mistake: every problem (which file,
which key path, what was expected) is collected and raised together in one
`ConfigError`, so a user fixes their file in one go. Nothing else in the server reads
YAML or guesses defaults.

Relative paths in the file resolve against the folder that holds the config file, not
the working directory, so `python -m homeserver -c some/dir/config.yaml` behaves the
same from anywhere.

`ensure_secrets(config)` is the one startup side effect kept here: secrets that are not
configured are generated once and kept in a file next to the database.

The package is split by job: `model` (the dataclasses), `reader` (the collecting
reader), `values` (single-value converters), `sections` (structured sections), `parse`
(YAML -> Config) and `secrets`. Import from `homeserver.config`; the names below are
the public surface.
"""

from homeserver.config.model import (
    DEFAULT_IP_RANGE_BLACKLIST,
    RESOURCE_NAMES,
    UNLIMITED,
    Config,
    ConfigError,
    DatabaseConfig,
    FederationConfig,
    IPNetwork,
    KeysConfig,
    ListenerConfig,
    MediaConfig,
    OldVerifyKey,
    PasswordHashingConfig,
    RateLimit,
    RateLimitConfig,
    RegistrationConfig,
    SecretsConfig,
    ServerNoticesConfig,
    SupportConfig,
    SupportContact,
    TlsConfig,
    TrustedKeyServer,
    WellKnownConfig,
)
from homeserver.config.parse import KNOWN_KEYS, load_config, parse_config
from homeserver.config.secrets import ensure_secrets, read_stored_shared_secret
from homeserver.config.values import parse_duration_ms, parse_size

__all__ = [
    "DEFAULT_IP_RANGE_BLACKLIST",
    "KNOWN_KEYS",
    "RESOURCE_NAMES",
    "UNLIMITED",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "FederationConfig",
    "IPNetwork",
    "KeysConfig",
    "ListenerConfig",
    "MediaConfig",
    "OldVerifyKey",
    "PasswordHashingConfig",
    "RateLimit",
    "RateLimitConfig",
    "RegistrationConfig",
    "SecretsConfig",
    "ServerNoticesConfig",
    "SupportConfig",
    "SupportContact",
    "TlsConfig",
    "TrustedKeyServer",
    "WellKnownConfig",
    "ensure_secrets",
    "load_config",
    "parse_config",
    "parse_duration_ms",
    "parse_size",
    "read_stored_shared_secret",
]
