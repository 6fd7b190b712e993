"""common.settings: defaults, then BALANCER_* variables, then overrides; unknown names fail."""

from __future__ import annotations

import dataclasses

import pytest
from balancer.common.settings import DEFAULT_REDIS_URL, Settings, SettingsError


def test_defaults_without_environment_or_overrides() -> None:
    s = Settings.from_env(env={})
    assert s == Settings()
    assert s.redis_url is None
    assert s.namespace == "balancer"
    assert s.heartbeat_interval == 1.0
    assert s.worker_timeout == 3.0
    assert s.max_payload_bytes == 1 << 20
    assert s.poison_threshold == 3
    assert s.server_url == DEFAULT_REDIS_URL


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().namespace = "other"  # type: ignore[misc]


def test_env_variables_are_parsed_with_their_field_types() -> None:
    s = Settings.from_env(env={
        "BALANCER_REDIS_URL": "redis://example:6380/2",
        "BALANCER_NAMESPACE": "prod",
        "BALANCER_HEARTBEAT_INTERVAL": "0.5",
        "BALANCER_WORKER_TIMEOUT": "2",
        "BALANCER_MAX_PAYLOAD_BYTES": "4096",
        "BALANCER_POISON_THRESHOLD": "5",
    })
    assert s.redis_url == "redis://example:6380/2"
    assert s.server_url == "redis://example:6380/2"
    assert s.namespace == "prod"
    assert s.heartbeat_interval == 0.5
    assert isinstance(s.heartbeat_interval, float)
    assert s.worker_timeout == 2.0
    assert isinstance(s.worker_timeout, float)
    assert s.max_payload_bytes == 4096
    assert isinstance(s.max_payload_bytes, int)
    assert s.poison_threshold == 5


def test_variables_without_the_prefix_are_ignored() -> None:
    s = Settings.from_env(env={"PATH": "/bin", "NAMESPACE": "x", "balancer_namespace": "y"})
    assert s.namespace == "balancer"


def test_unknown_balancer_variable_raises_naming_it_and_listing_known_ones() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env={"BALANCER_FOO": "1"})
    message = str(info.value)
    assert "BALANCER_FOO" in message
    assert "BALANCER_HEARTBEAT_INTERVAL" in message


def test_misspelt_variable_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(SettingsError, match="BALANCER_HEARTBEAT_INTERVALL"):
        Settings.from_env(env={"BALANCER_HEARTBEAT_INTERVALL": "2"})


def test_unknown_override_keyword_raises_naming_it() -> None:
    with pytest.raises(SettingsError, match="'heartbeat'"):
        Settings.from_env(env={}, heartbeat=2.0)


@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("BALANCER_HEARTBEAT_INTERVAL", "fast", "float"),
        ("BALANCER_MAX_PAYLOAD_BYTES", "1.5", "int"),
        ("BALANCER_POISON_THRESHOLD", "three", "int"),
    ],
)
def test_non_numeric_value_raises_naming_the_variable(variable: str, value: str,
                                                       kind: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env={variable: value})
    message = str(info.value)
    assert variable in message
    assert repr(value) in message
    assert kind in message


def test_overrides_win_over_environment() -> None:
    s = Settings.from_env(env={"BALANCER_NAMESPACE": "from-env"}, namespace="from-flag")
    assert s.namespace == "from-flag"


def test_overrides_of_none_are_ignored() -> None:
    s = Settings.from_env(env={"BALANCER_NAMESPACE": "from-env"}, namespace=None,
                          heartbeat_interval=None)
    assert s.namespace == "from-env"
    assert s.heartbeat_interval == 1.0


def test_worker_timeout_shorter_than_heartbeat_interval_is_rejected() -> None:
    with pytest.raises(SettingsError, match="worker_timeout"):
        Settings.from_env(env={"BALANCER_HEARTBEAT_INTERVAL": "2",
                               "BALANCER_WORKER_TIMEOUT": "1"})


def test_worker_timeout_equal_to_heartbeat_interval_is_accepted() -> None:
    s = Settings.from_env(env={}, heartbeat_interval=2.0, worker_timeout=2.0)
    assert s.worker_timeout == 2.0


@pytest.mark.parametrize("name", ["heartbeat_interval", "worker_timeout", "leader_ttl",
                                  "dispatch_tick"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_intervals_are_rejected(name: str, value: float) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env={}, **{name: value})


@pytest.mark.parametrize("value", ["0", "0.5", "-1"])
def test_a_result_ttl_that_would_delete_results_at_once_is_rejected(value: str) -> None:
    # Redis deletes a key given a TTL of 0: no dependent or client could read a result.
    with pytest.raises(SettingsError, match="result_ttl must be at least 1 second"):
        Settings.from_env(env={"BALANCER_RESULT_TTL": value})
    assert Settings.from_env(env={"BALANCER_RESULT_TTL": "1"}).result_ttl == 1.0


def test_poison_threshold_below_one_is_rejected() -> None:
    with pytest.raises(SettingsError, match="poison_threshold"):
        Settings.from_env(env={"BALANCER_POISON_THRESHOLD": "0"})


@pytest.mark.parametrize("namespace", ["", "a{b", "a}b", "a:b", "a b"])
def test_bad_namespace_is_rejected(namespace: str) -> None:
    with pytest.raises(SettingsError, match="namespace"):
        Settings.from_env(env={}, namespace=namespace)


def test_validate_rejects_a_directly_built_invalid_settings() -> None:
    with pytest.raises(SettingsError, match="worker_timeout"):
        Settings(heartbeat_interval=5.0, worker_timeout=1.0).validate()


def test_replace_returns_a_changed_copy() -> None:
    s = Settings()
    t = s.replace(namespace="other")
    assert t.namespace == "other"
    assert s.namespace == "balancer"


@pytest.mark.parametrize("variable", ["BALANCER_HEARTBEAT_INTERVAL", "BALANCER_WORKER_TIMEOUT"])
def test_nan_interval_is_rejected(variable: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env={variable: "nan"})


@pytest.mark.parametrize(("env", "says"), [
    ({"BALANCER_EVENTS_MAX": "0"}, "events_max"),
    ({"BALANCER_METRICS_TASK_LABELS": "-1"}, "metrics_task_labels"),
    ({"BALANCER_TASK_EVENTS": "maybe"}, "task_events"),
    ({"BALANCER_DASHBOARD_TOKEN": "short"}, "dashboard_token"),
])
def test_event_and_dashboard_settings_are_checked(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env(env=env)


def test_the_dashboard_token_stays_out_of_the_repr() -> None:
    token = "a-dashboard-token-that-is-long"
    settings = Settings.from_env(env={"BALANCER_DASHBOARD_TOKEN": token})
    assert settings.dashboard_token == token and token not in repr(settings)


@pytest.mark.parametrize(("raw", "preload"), [("0", False), ("off", False), ("No", False),
                                             ("1", True), ("true", True), (" on ", True)])
def test_a_yes_or_no_setting_reads_the_usual_words(raw: str, preload: bool) -> None:
    assert Settings.from_env(env={"BALANCER_PRELOAD_TASKS": raw}).preload_tasks is preload


def test_a_yes_or_no_setting_of_another_word_is_an_error_naming_it() -> None:
    with pytest.raises(SettingsError, match="BALANCER_PRELOAD_TASKS='maybe'"):
        Settings.from_env(env={"BALANCER_PRELOAD_TASKS": "maybe"})


def test_the_markers_a_worker_sets_for_its_pool_are_not_settings() -> None:
    env = {"BALANCER_WORKER_CHILD": "1", "BALANCER_POOL_IMPORTS": "app.tasks"}
    assert Settings.from_env(env=env) == Settings.from_env(env={})
