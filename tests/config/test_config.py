"""The config file, named environments and the resolution order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vastkit.api import Client
from vastkit.config import ENV_VARS, Settings, load_config
from vastkit.errors import ConfigError

KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


ENVIRONMENTS = """\
default: dev
project: shared-project
environments:
  dev:
    base_url: http://127.0.0.1:8765
    store_url: ./runs
    poll_interval_s: 5
  prod:
    base_url: https://console.vast.ai
    store_url: s3://ml-artifacts/runs
    project: vision
    team: ml-research
"""


# -- defaults and files ---------------------------------------------------------------------------


def test_no_file_gives_the_defaults(isolated: Path, tmp_path: Path) -> None:
    settings = load_config()
    assert settings.config_path is None
    assert settings.env is None
    assert settings.base_url == "https://console.vast.ai"
    assert settings.store_url is None
    assert settings.profiles_file is None
    assert settings.budgets_file is None
    assert settings.project is None
    assert settings.poll_interval_s is None
    assert settings.ledger_path == str(tmp_path / "state" / "vastkit" / "ledger.db")
    assert settings.source("store_url") == "default"


def test_the_working_directory_file_beats_the_user_file(isolated: Path, tmp_path: Path) -> None:
    write(tmp_path / "xdg" / "vastkit" / "config.yaml", "project: from-user-file\n")
    assert load_config().project == "from-user-file"
    write(isolated / "vastkit.yaml", "project: from-cwd\n")
    settings = load_config()
    assert settings.project == "from-cwd"
    assert settings.source("project") == "vastkit.yaml:1"


def test_vastkit_config_names_the_file(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "vastkit.yaml", "project: from-cwd\n")
    other = write(tmp_path / "elsewhere.yaml", "project: from-var\n")
    monkeypatch.setenv("VASTKIT_CONFIG", str(other))
    assert load_config().project == "from-var"
    assert load_config(isolated / "vastkit.yaml").project == "from-cwd"  # argument wins
    monkeypatch.setenv("VASTKIT_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"VASTKIT_CONFIG.*not found"):
        load_config()


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "project" / "vastkit.yaml",
        "profiles_file: conf/profiles.yaml\nbudgets_file: ~/budgets.yaml\n"
        "ledger_path: state/ledger.db\nstore_url: runs\n",
    )
    settings = load_config(config)
    assert settings.profiles_file == str(tmp_path / "project" / "conf" / "profiles.yaml")
    assert settings.budgets_file == str(tmp_path / "home" / "budgets.yaml")
    assert settings.ledger_path == str(tmp_path / "project" / "state" / "ledger.db")
    assert settings.store_url == str(tmp_path / "project" / "runs")


# -- the resolution order -------------------------------------------------------------------------

LAYERS = [
    ("base_url", "http://file.test", "http://env.test", "http://arg.test"),
    ("store_url", "s3://file/runs", "s3://env/runs", "s3://arg/runs"),
    ("profiles_file", "/f/profiles.yaml", "/e/profiles.yaml", "/a/profiles.yaml"),
    ("budgets_file", "/f/budgets.yaml", "/e/budgets.yaml", "/a/budgets.yaml"),
    ("ledger_path", "/f/ledger.db", "/e/ledger.db", "/a/ledger.db"),
    ("project", "file-project", "env-project", "arg-project"),
    ("team", "file-team", "env-team", "arg-team"),
    ("poll_interval_s", 30.0, 20.0, 10.0),
]


@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_each_layer_overrides_the_next(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, layer: tuple[str, object, object, object]
) -> None:
    name, in_file, in_env, argument = layer
    default = getattr(load_config(), name)
    assert default != in_file

    write(isolated / "vastkit.yaml", f"{name}: {in_file}\n")
    from_file = load_config()
    assert getattr(from_file, name) == in_file
    assert from_file.source(name) == "vastkit.yaml:1"

    monkeypatch.setenv(ENV_VARS[name], str(in_env))
    from_env = load_config()
    assert getattr(from_env, name) == in_env
    assert from_env.source(name) == f"${ENV_VARS[name]}"

    assert from_env.resolve(name, argument) == argument
    assert from_env.resolve(name, None) == in_env
    overridden = from_env.override(**{name: argument})
    assert getattr(overridden, name) == argument
    assert overridden.source(name) == "argument"


def test_resolve_rejects_an_unknown_setting() -> None:
    with pytest.raises(ValueError, match="did you mean 'store_url'"):
        Settings().resolve("stor_url", "x")


def test_a_bad_poll_interval_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="VASTKIT_POLL_INTERVAL must be a positive number"):
        load_config()


# -- named environments ---------------------------------------------------------------------------


def test_the_default_environment_is_used(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS)
    settings = load_config()
    assert settings.env == "dev"
    assert settings.base_url == "http://127.0.0.1:8765"
    assert settings.store_url == str(isolated / "runs")
    assert settings.poll_interval_s == 5.0
    assert settings.project == "shared-project"  # from the top level


def test_vastkit_env_and_the_argument_choose(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS)
    monkeypatch.setenv("VASTKIT_ENV", "prod")
    prod = load_config()
    assert prod.env == "prod"
    assert prod.store_url == "s3://ml-artifacts/runs"
    assert prod.project == "vision"  # the environment overrides the top level
    assert prod.source("project") == "vastkit.yaml:11"
    assert load_config(env="dev").env == "dev"  # the argument beats VASTKIT_ENV


def test_an_unknown_environment_suggests_the_nearest(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS)
    with pytest.raises(ConfigError, match="did you mean 'prod'") as info:
        load_config(env="prd")
    assert info.value.path == "vastkit.yaml"
    monkeypatch.setenv("VASTKIT_ENV", "staging")
    with pytest.raises(ConfigError, match=r"'staging' \(from \$VASTKIT_ENV\).*dev, prod"):
        load_config()


def test_a_default_that_names_no_environment(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS.replace("default: dev", "default: deev"))
    with pytest.raises(ConfigError, match="did you mean 'dev'") as info:
        load_config()
    assert (info.value.line, info.value.key) == (1, "default")


def test_several_environments_need_a_default(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS.replace("default: dev\n", ""))
    with pytest.raises(ConfigError, match="no 'default:'"):
        load_config()
    assert load_config(env="prod").env == "prod"


def test_an_environment_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VASTKIT_ENV", "prod")
    with pytest.raises(ConfigError, match="no config file"):
        load_config()


# -- mistakes point at the line -------------------------------------------------------------------


def test_a_misspelt_key_names_file_line_key_and_suggestion(isolated: Path) -> None:
    write(
        isolated / "vastkit.yaml", ENVIRONMENTS.replace("    store_url: ./runs", "    stor_url: x")
    )
    with pytest.raises(ConfigError) as info:
        load_config()
    error = info.value
    assert (error.path, error.line, error.key) == ("vastkit.yaml", 6, "environments.dev.stor_url")
    assert "did you mean 'store_url'?" in str(error)
    assert str(error).startswith("vastkit.yaml:6: environments.dev.stor_url: unknown key")


def test_a_typo_in_another_environment_is_found_too(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS.replace("    team: ml-research", "    teem: ml"))
    with pytest.raises(ConfigError, match="did you mean 'team'") as info:
        load_config(env="dev")
    assert (info.value.line, info.value.key) == (12, "environments.prod.teem")


def test_a_misspelt_top_level_key(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", "default: dev\nenviroments:\n  dev: {}\n")
    with pytest.raises(ConfigError, match="did you mean 'environments'") as info:
        load_config()
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("poll_interval_s: -3\n", 1, "positive number"),
        ("base_url: console.vast.ai\n", 1, "http:// or https://"),
        ("project: [a, b]\n", 1, "non-empty string"),
        ("storage_options: yes\n", 1, "mapping of fsspec options"),
        ("api_key_env: 'not a name'\n", 1, "not a valid environment variable name"),
        ("project: a\nproject: b\n", 2, "duplicate key"),
        ("environments:\n  dev: [1]\n", 2, "must be a mapping"),
    ],
)
def test_bad_values_point_at_their_line(isolated: Path, text: str, line: int, message: str) -> None:
    write(isolated / "vastkit.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config()
    assert info.value.line == line


# -- the API key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api_key", "key", "vast_api_key"])
def test_a_raw_key_in_the_file_is_rejected(isolated: Path, name: str) -> None:
    write(isolated / "vastkit.yaml", f"environments:\n  dev:\n    {name}: {KEY}\n")
    with pytest.raises(ConfigError, match="do not put the API key itself") as info:
        load_config()
    assert info.value.line == 3
    assert "api_key_env" in str(info.value)
    assert KEY not in str(info.value)


def test_a_raw_key_given_as_a_variable_name_is_rejected(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", f"api_key_env: {KEY}\n")
    with pytest.raises(ConfigError, match="looks like an API key") as info:
        load_config()
    assert KEY not in str(info.value)


def test_key_order_argument_env_config_then_vastai_files(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "xdg" / "vastai" / "vast_api_key", "from-vastai-file")
    assert load_config().api_key() == "from-vastai-file"

    key_file = write(tmp_path / "keys" / "dev", "from-config-file\n")
    write(isolated / "vastkit.yaml", f"api_key_file: {key_file}\n")
    assert load_config().api_key() == "from-config-file"

    write(isolated / "vastkit.yaml", "api_key_env: MY_DEV_KEY\n")
    monkeypatch.setenv("MY_DEV_KEY", "from-config-variable")
    settings = load_config()
    assert settings.api_key() == "from-config-variable"
    assert settings.source("api_key") == "vastkit.yaml:1"

    monkeypatch.setenv("VAST_API_KEY", "from-vast-api-key")
    assert load_config().api_key() == "from-vast-api-key"
    assert load_config().source("api_key") == "$VAST_API_KEY"
    assert load_config().api_key("from-argument") == "from-argument"


def test_a_named_key_source_that_is_empty_does_not_fall_back(
    isolated: Path, tmp_path: Path
) -> None:
    write(tmp_path / "xdg" / "vastai" / "vast_api_key", "another-accounts-key")
    write(isolated / "vastkit.yaml", "environments:\n  prod:\n    api_key_env: VAST_PROD_KEY\n")
    with pytest.raises(ConfigError, match=r"\$VAST_PROD_KEY .*vastkit.yaml:3.*not set"):
        load_config().api_key()
    write(isolated / "vastkit.yaml", "api_key_file: keys/missing\n")
    with pytest.raises(ConfigError, match="API key file does not exist"):
        load_config().api_key()


def test_an_environment_key_source_replaces_the_top_level_one(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        isolated / "vastkit.yaml",
        "api_key_file: shared-key\nenvironments:\n  prod:\n    api_key_env: PROD_KEY\n",
    )
    monkeypatch.setenv("PROD_KEY", "prod-key")
    settings = load_config()
    assert settings.api_key_file is None
    assert settings.api_key() == "prod-key"


def test_a_readable_key_file_warns(isolated: Path) -> None:
    write(isolated / "key", "the-key", mode=0o644)
    write(isolated / "vastkit.yaml", "api_key_file: key\n")
    with pytest.warns(UserWarning, match="readable by other users"):
        assert load_config().api_key() == "the-key"


def test_the_client_honours_the_config_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        isolated / "vastkit.yaml",
        ENVIRONMENTS.replace("default: dev", "default: dev\napi_key_env: K"),
    )
    monkeypatch.setenv("K", "key-from-config")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8765"
        assert client._transport._api_key == "key-from-config"
    monkeypatch.setenv("VAST_URL", "http://env.test")
    with Client() as client:
        assert client.base_url == "http://env.test"
    with Client(base_url="http://arg.test") as client:
        assert client.base_url == "http://arg.test"
    monkeypatch.setenv("VASTKIT_ENV", "prod")
    monkeypatch.delenv("VAST_URL")
    with Client() as client:
        assert client.base_url == "https://console.vast.ai"


def test_settings_client_uses_the_environment(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "vastkit.yaml", ENVIRONMENTS)
    monkeypatch.setenv("VAST_API_KEY", "k")
    with load_config(env="dev").client() as client:
        assert client.base_url == "http://127.0.0.1:8765"


# -- storage options ------------------------------------------------------------------------------


def test_storage_options_expand_variables_and_stay_out_of_repr(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        isolated / "vastkit.yaml",
        "store_url: s3://b/runs\nstorage_options:\n  key: ${AWS_KEY}\n  secret: ${AWS_SECRET}\n"
        "  client_kwargs: {endpoint_url: 'http://${HOST}:9000'}\n",
    )
    monkeypatch.setenv("AWS_KEY", "AKIA-visible")
    monkeypatch.setenv("AWS_SECRET", "s3cr3t-value")
    monkeypatch.setenv("HOST", "minio")
    settings = load_config()
    assert settings.storage_options == {
        "key": "AKIA-visible",
        "secret": "s3cr3t-value",
        "client_kwargs": {"endpoint_url": "http://minio:9000"},
    }
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings.to_dict())
    monkeypatch.delenv("AWS_SECRET")
    with pytest.raises(ConfigError, match=r"\$\{AWS_SECRET\} is used here but") as info:
        load_config()
    assert (info.value.line, info.value.key) == (4, "storage_options.secret")


def test_settings_from_another_file_do_not_borrow_the_cwd_key_source(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "vastkit.yaml", "api_key_env: CWD_KEY\n")
    monkeypatch.setenv("CWD_KEY", "key-of-the-cwd-file")
    write(tmp_path / "xdg" / "vastai" / "vast_api_key", "official-file-key")
    other = write(tmp_path / "other.yaml", "project: p\n")
    assert load_config(other).api_key() == "official-file-key"


def test_explicit_client_arguments_never_read_the_config_file(isolated: Path) -> None:
    write(isolated / "vastkit.yaml", "stor_url: broken\n")
    with Client("k", base_url="http://arg.test") as client:
        assert client.base_url == "http://arg.test"
    with pytest.raises(ConfigError, match="did you mean 'store_url'"):
        Client("k")  # the base URL would come from the (broken) file


def test_a_client_reads_the_config_file_once(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vastkit._settings

    write(
        isolated / "vastkit.yaml",
        ENVIRONMENTS.replace("default: dev", "default: dev\napi_key_env: K"),
    )
    monkeypatch.setenv("K", "key-from-config")
    reads: list[str] = []
    real = vastkit._settings.read_source

    def counting(source: Any, *, what: str) -> tuple[str, str]:
        reads.append(str(source))
        return real(source, what=what)

    monkeypatch.setattr(vastkit._settings, "read_source", counting)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8765"
    assert reads == ["vastkit.yaml"]
