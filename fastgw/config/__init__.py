"""fastgw configuration layer: Kong-compatible entities, validation and loading."""

from fastgw.config.declarative import (
    FORMAT_VERSIONS,
    SUPPORTED_PLUGINS,
    build_entity,
    dump_declarative,
    load_declarative,
)
from fastgw.config.loader import check_file, load_config_file, read_json_file
from fastgw.config.model import (
    DEFAULT_HEALTHCHECKS,
    DEFAULT_TARGET_PORT,
    Config,
    Consumer,
    Plugin,
    Route,
    Service,
    Target,
    Upstream,
    default_healthchecks,
    entity_to_dict,
    normalize_host,
    normalize_path,
    normalize_target,
    parse_service_url,
    pcre_to_python,
)
from fastgw.config.settings import GatewaySettings, load_settings, parse_listen, settings_to_dict
from fastgw.config.errors import ConfigError
from fastgw.config.validate import validate_entity

__all__ = [
    "Config", "Service", "Route", "Upstream", "Target", "Consumer", "Plugin",
    "GatewaySettings", "ConfigError",
    "load_declarative", "dump_declarative", "build_entity", "validate_entity",
    "load_config_file", "check_file", "read_json_file",
    "load_settings", "parse_listen", "settings_to_dict",
    "entity_to_dict", "default_healthchecks", "normalize_host", "normalize_path",
    "normalize_target", "parse_service_url", "pcre_to_python",
    "DEFAULT_HEALTHCHECKS", "DEFAULT_TARGET_PORT", "FORMAT_VERSIONS", "SUPPORTED_PLUGINS",
]
