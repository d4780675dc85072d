"""Credentials in tracking URIs: hidden wherever ecopipe writes or prints, and taken out of the URI
before Hydra, submitit or MLflow can write it down.

A shared store is read by everyone who may read its experiments, and Hydra, submitit and MLflow write
the URI they are given into files and lines of their own (`.hydra/*.yaml`, pickles, MLflow's "View run
at" link). So `CredentialsCallback` runs first, before any of them: a password in `tracking.uri` (or
in $MLFLOW_TRACKING_URI) moves to the environment variables the clients read (MLFLOW_TRACKING_USERNAME
and MLFLOW_TRACKING_PASSWORD for a tracking server, PGPASSWORD for PostgreSQL), and every string of
the composed config, Hydra's own node and the command line's overrides included, loses it. Jobs inherit
the environment, whatever the launcher. `redact` is the one mask for everything ecopipe itself writes.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from ecopipe.config import ConfigError

# Query keys whose value is a secret (libpq's `password`, `sslpassword`; tokens of other stores).
SECRET_KEYS = (
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "secret",
)
URI_ENV = "MLFLOW_TRACKING_URI"

# scheme://user:password@host, also in Hydra's escaped form (`http\://u\:pw@host`). The password runs to
# the authority's last `@` (a password may hold a raw `@`); the host holds none.
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.-]*\\?://)(?P<user>[^:/@\s\\'\"]*)\\?:(?P<password>[^\s'\"]*)"
    r"@(?P<host>[^@/\s?#'\"]*)",
    re.IGNORECASE,
)
_KEYS = "|".join(SECRET_KEYS)
_QUERY_SECRET = re.compile(rf"(?P<sep>[?&;])(?P<key>{_KEYS})=(?P<value>[^&;#\s'\"]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """Every credential of a URI in `text` replaced by ***: `user:***@host`, `?password=***`."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@{m['host']}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['sep']}{m['key']}=***", text)


def strip_credentials(text: str) -> str:
    """`text` with every URI's password and secret query parameters removed (the user name stays)."""

    def userless(m: re.Match[str]) -> str:
        # A tracking server takes its user from MLFLOW_TRACKING_USERNAME: the URI keeps only the host.
        user = "" if m["scheme"].lower().startswith("http") or not m["user"] else f"{m['user']}@"
        return f"{m['scheme']}{user}{m['host']}"

    text = _USERINFO.sub(userless, text)

    def drop(match: re.Match[str]) -> str:
        # `?password=x&a=b` keeps `?a=b`'s question mark; `a=b&password=x` just loses the pair
        return "?" if match["sep"] == "?" and match.end() < len(text) and text[match.end()] in "&;" else ""

    text = _QUERY_SECRET.sub(drop, text)
    return text.replace("?&", "?").replace("?;", "?")


# Characters a password cannot hold unescaped: they end a URI's parts (`/ ? #`) or a token of text
# (quotes, white space, `\\`), so that no pattern finds where the password ends. Percent-encode them.
_UNSAFE = re.compile(r"[\s'\"\\#/?]")


def check_secret_characters(uri: str) -> None:
    """Refuse a password that the URI cannot carry whole, before it is split, masked or written."""
    authority = uri.partition("://")[2]
    userinfo = authority.rpartition("@")[0] if "@" in authority else ""
    query_secrets = _QUERY_SECRET.search(uri) is not None
    unsafe = (":" in userinfo and _UNSAFE.search(userinfo.partition(":")[2])) or (
        query_secrets and re.search(r"[\s'\"\\#]", uri)
    )
    if unsafe:
        raise ConfigError(
            "tracking.uri carries a password with a character a URI cannot hold unescaped (white space, "
            "a quote, \\, #, / or ?): it cannot be taken out of the URI safely. Give it in "
            "MLFLOW_TRACKING_PASSWORD (a tracking server) or PGPASSWORD (PostgreSQL) instead, or "
            "percent-encode it (# is %23, / is %2F)."
        )


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """The URI without its secrets, and the environment variables that carry them to the client."""
    check_secret_characters(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0].lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = [(k, v) for k, v in query if k.lower() in SECRET_KEYS]
    if parts.password is None and not secret_query:
        return uri, {}
    if scheme in ("http", "https") and not secret_query:
        env = {"MLFLOW_TRACKING_USERNAME": unquote(parts.username or ""),
               "MLFLOW_TRACKING_PASSWORD": unquote(parts.password or "")}  # fmt: skip
        return urlunsplit(_with_netloc(parts, keep_user=False)), env
    if scheme == "postgresql" and all(k.lower() == "password" for k, _ in secret_query):
        password = unquote(parts.password) if parts.password is not None else secret_query[-1][1]
        kept = urlencode([(k, v) for k, v in query if k.lower() not in SECRET_KEYS])
        return urlunsplit(_with_netloc(parts, keep_user=True)._replace(query=kept)), {"PGPASSWORD": password}
    raise ConfigError(
        f"tracking.uri={redact(uri)} carries a secret that no client reads from the environment; "
        "Hydra, submitit and MLflow would write it into files others can read. Give a tracking server's "
        "password in MLFLOW_TRACKING_PASSWORD, PostgreSQL's in PGPASSWORD or ~/.pgpass, MySQL's in an "
        "option file (mysql://user@host/db?read_default_file=~/.my.cnf)."
    )


def _with_netloc(parts: SplitResult, keep_user: bool) -> SplitResult:
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0] if keep_user else ""
    return parts._replace(netloc=f"{user}@{host}" if user else host)


def _rewrite_strings(node: DictConfig | ListConfig, rewrite: Callable[[str], str]) -> None:
    """Rewrite every string of a config in place; interpolations and missing values are left as they are."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        value: Any = node[key]
        if isinstance(value, DictConfig | ListConfig):
            _rewrite_strings(value, rewrite)
        elif isinstance(value, str) and (rewritten := rewrite(value)) != value:
            node[key] = rewritten


class CredentialsCallback(Callback):
    """Runs before every other callback and before Hydra saves anything (see the module's note)."""

    def _take_credentials(self, config: DictConfig) -> None:
        _refuse_a_sweep_of_stores(config)
        uri = config.tracking.uri or os.environ.get(URI_ENV)
        clean, env = split_credentials(uri) if uri else (uri, {})
        os.environ.update(env)
        if os.environ.get(URI_ENV):
            os.environ[URI_ENV] = strip_credentials(os.environ[URI_ENV])
        with read_write(config), open_dict(config):
            if env and config.tracking.uri:  # the overrides hold the URI as it was typed
                typed = config.tracking.uri
                _rewrite_strings(config, lambda text: text.replace(typed, clean))
            _rewrite_strings(config, strip_credentials)
        # Fail closed: a password that is still anywhere in the config would be written by Hydra.
        leaked = [secret for secret in env.values() if secret and secret in OmegaConf.to_yaml(config)]
        if leaked:
            raise ConfigError(
                "tracking.uri's password could not be taken out of every copy of the config that Hydra "
                "writes: give it in MLFLOW_TRACKING_PASSWORD or PGPASSWORD instead."
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse_or_take(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse_or_take(config)

    def _refuse_or_take(self, config: DictConfig) -> None:
        try:
            self._take_credentials(config)
        except Exception as error:  # Hydra turns a callback's exception into a warning: fail closed
            print(f"ecopipe: error: {redact(str(error))}", file=sys.stderr)
            sys.exit(2)


def _refuse_a_sweep_of_stores(config: DictConfig) -> None:
    """A sweep lives in one store: its parent run and its jobs' runs link by id."""
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(config.hydra.overrides.task)):
        if override.key_or_group == "tracking.uri" and override.is_sweep_override():
            raise ConfigError(
                "tracking.uri takes one store per sweep (its parent run and its jobs' runs link by id): "
                "run one sweep per store, and aggregate them together with --tracking-uri once per store."
            )
