"""ParamPolicy (pass / drop / reject per provider and model) and the registry's param_policy()."""

from types import MappingProxyType

import pytest

from ai_gateway.config.file import ModelPolicyConfig, ProviderConfig
from ai_gateway.errors import InvalidRequest, ParameterRejected
from ai_gateway.providers.params import Action, ParamPolicy
from ai_gateway.providers.registry import param_policy
from ai_gateway.providers.specs import SPECS


def policy(
    default: dict[str, Action] | None = None,
    per_model: dict[str, dict[str, Action]] | None = None,
) -> ParamPolicy:
    return ParamPolicy(
        "acme",
        MappingProxyType(default or {}),
        MappingProxyType({m: MappingProxyType(a) for m, a in (per_model or {}).items()}),
    )


# --- ParamPolicy ------------------------------------------------------------------------------


def test_an_empty_policy_passes_everything_unchanged() -> None:
    params = {"temperature": 0.5, "logprobs": True, "vendor_extra": {"a": 1}}

    result = ParamPolicy("acme").apply("m", params)

    assert result == {"temperature": 0.5, "logprobs": True, "vendor_extra": {"a": 1}}
    assert ParamPolicy("acme").is_pass_all


def test_a_policy_with_entries_is_not_pass_all() -> None:
    assert not policy({"seed": "drop"}).is_pass_all
    assert not policy(per_model={"m": {"seed": "drop"}}).is_pass_all


def test_drop_removes_only_that_parameter() -> None:
    result = policy({"logprobs": "drop"}).apply("m", {"logprobs": True, "temperature": 0.1})

    assert result == {"temperature": 0.1}


def test_apply_does_not_modify_the_callers_params() -> None:
    params = {"logprobs": True, "temperature": 0.1}

    policy({"logprobs": "drop"}).apply("m", params)

    assert params == {"logprobs": True, "temperature": 0.1}


def test_explicit_pass_keeps_the_parameter() -> None:
    result = policy({"seed": "pass", "top_k": "drop"}).apply("m", {"seed": 7})

    assert result == {"seed": 7}


def test_unknown_parameters_pass_when_the_policy_has_entries() -> None:
    result = policy({"logprobs": "drop"}).apply("m", {"brand_new_param": 1})

    assert result == {"brand_new_param": 1}


def test_a_falsy_value_is_still_passed() -> None:
    result = policy({"logprobs": "drop"}).apply("m", {"temperature": 0, "stop": None})

    assert result == {"temperature": 0, "stop": None}


def test_reject_raises_a_400_naming_the_parameter() -> None:
    with pytest.raises(ParameterRejected) as info:
        policy({"seed": "reject"}).apply("big-model", {"temperature": 1, "seed": 3})

    error = info.value
    assert error.status_code == 400
    assert error.code == "unsupported_parameter"
    assert error.param == "seed"
    assert error.message == "Parameter 'seed' is not supported by 'acme/big-model'."


def test_a_rejected_parameter_is_an_invalid_request_envelope() -> None:
    with pytest.raises(InvalidRequest) as info:
        policy({"seed": "reject"}).apply("m", {"seed": 3})

    assert info.value.envelope() == {
        "error": {
            "message": "Parameter 'seed' is not supported by 'acme/m'.",
            "type": "invalid_request_error",
            "param": "seed",
            "code": "unsupported_parameter",
        }
    }


def test_reject_only_applies_when_the_parameter_is_sent() -> None:
    assert policy({"seed": "reject"}).apply("m", {"temperature": 1}) == {"temperature": 1}


def test_a_per_model_action_wins_over_the_provider_default() -> None:
    p = policy({"seed": "drop"}, {"special": {"seed": "pass"}})

    assert p.apply("special", {"seed": 1}) == {"seed": 1}
    assert p.apply("other", {"seed": 1}) == {}


def test_a_per_model_reject_applies_only_to_that_model() -> None:
    p = policy(per_model={"strict": {"logit_bias": "reject"}})

    assert p.apply("lenient", {"logit_bias": {"1": 2}}) == {"logit_bias": {"1": 2}}
    with pytest.raises(ParameterRejected, match="'acme/strict'"):
        p.apply("strict", {"logit_bias": {"1": 2}})


def test_per_model_entries_add_to_the_provider_defaults() -> None:
    p = policy({"logprobs": "drop"}, {"m": {"seed": "drop"}})

    assert p.actions("m") == {"logprobs": "drop", "seed": "drop"}
    assert p.apply("m", {"logprobs": True, "seed": 1, "n": 1}) == {"n": 1}


def test_actions_of_a_model_without_its_own_entries_are_the_defaults() -> None:
    p = policy({"logprobs": "drop"}, {"m": {"seed": "drop"}})

    assert p.actions("unlisted") == {"logprobs": "drop"}


def test_the_first_rejected_parameter_is_reported() -> None:
    p = policy({"a": "reject", "b": "reject"})

    with pytest.raises(ParameterRejected) as info:
        p.apply("m", {"b": 1, "a": 2})

    assert info.value.param == "b"


# --- registry.param_policy() ------------------------------------------------------------------


def test_param_policy_without_config_or_drops_passes_everything() -> None:
    result = param_policy("acme", None)

    assert result.provider == "acme"
    assert result.is_pass_all


def test_param_policy_turns_spec_drops_into_drop_actions() -> None:
    result = param_policy("groq", None, frozenset({"logprobs", "logit_bias"}))

    assert dict(result.default) == {"logit_bias": "drop", "logprobs": "drop"}
    assert result.apply("llama", {"logprobs": True, "logit_bias": {}, "seed": 1}) == {"seed": 1}


def test_param_policy_for_the_shipped_groq_spec() -> None:
    groq = next(spec for spec in SPECS if spec.name == "groq")

    result = param_policy("groq", None, groq.unsupported_params)

    assert result.apply("llama", {"top_logprobs": 2, "temperature": 0.3}) == {"temperature": 0.3}


def test_config_params_override_spec_drops() -> None:
    config = ProviderConfig(params={"logprobs": "pass", "seed": "reject"})

    result = param_policy("groq", config, frozenset({"logprobs", "logit_bias"}))

    assert dict(result.default) == {"logit_bias": "drop", "logprobs": "pass", "seed": "reject"}
    assert result.apply("m", {"logprobs": True, "logit_bias": {}}) == {"logprobs": True}
    with pytest.raises(ParameterRejected):
        result.apply("m", {"seed": 1})


def test_config_per_model_params_win_over_provider_and_spec() -> None:
    config = ProviderConfig(
        params={"seed": "reject"},
        models={"big": ModelPolicyConfig(params={"seed": "pass", "logprobs": "pass"})},
    )

    result = param_policy("groq", config, frozenset({"logprobs"}))

    assert result.apply("big", {"seed": 1, "logprobs": True}) == {"seed": 1, "logprobs": True}
    assert result.apply("small", {"logprobs": True}) == {}
    with pytest.raises(ParameterRejected):
        result.apply("small", {"seed": 1})


def test_param_policy_with_an_empty_config_is_pass_all() -> None:
    assert param_policy("acme", ProviderConfig()).is_pass_all


def test_param_policy_mappings_are_read_only() -> None:
    config = ProviderConfig(params={"seed": "drop"}, models={"m": ModelPolicyConfig()})
    result = param_policy("acme", config)

    with pytest.raises(TypeError):
        result.default["seed"] = "pass"  # type: ignore[index]
    with pytest.raises(TypeError):
        result.per_model["m"]["x"] = "drop"  # type: ignore[index]
