"""KeyStore: hashed gateway keys, constant-time checks, never printed."""

from pydantic import SecretStr

from ai_gateway.keys.static import KeyStore


def test_verify_accepts_every_stored_key() -> None:
    store = KeyStore(["sk-one", "sk-two"])

    assert store.verify("sk-one")
    assert store.verify("sk-two")


def test_verify_rejects_unknown_keys() -> None:
    store = KeyStore(["sk-one"])

    assert not store.verify("sk-other")
    assert not store.verify("sk-one ")
    assert not store.verify("SK-ONE")
    assert not store.verify("")


def test_empty_keys_are_ignored() -> None:
    store = KeyStore(["", "sk-one", ""])

    assert len(store) == 1
    assert not store.verify("")


def test_a_store_of_only_empty_keys_is_empty_and_falsy() -> None:
    store = KeyStore([""])

    assert len(store) == 0
    assert not store
    assert not store.verify("")


def test_from_secrets_reads_the_secret_values() -> None:
    store = KeyStore.from_secrets([SecretStr("sk-one"), SecretStr("")])

    assert len(store) == 1
    assert store.verify("sk-one")


def test_repr_counts_keys_and_never_shows_them() -> None:
    store = KeyStore(["sk-secret-one", "sk-secret-two"])

    assert repr(store) == "KeyStore(2 keys)"
    assert "sk-secret" not in repr(store)
    assert "sk-secret" not in str(store)
