"""Secret encryption: the server key on disk and in the environment, sealing, hashing, rotation."""

from __future__ import annotations

import base64
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage.errors import OpenWriteError
from storage.secrets import (
    KEY_FILE_NAME,
    SecretBox,
    SecretError,
    ServerKey,
    ServerKeyError,
    key_hint,
    load_server_key,
    rotate,
    secret_aad,
    token_key_id,
)

API_KEY = "sk-ant-api03-Zq8vXl2mN4pR7tY1wE6uI9oA3sD5fG0h"
ROW_AAD = secret_aad("ai_provider", "prov_1", "user_ann", "api_key")


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(ServerKey.generate())


def flip_last_character(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def test_a_sealed_key_opens_to_the_same_text(box: SecretBox) -> None:
    token = box.seal(API_KEY, aad=ROW_AAD)

    assert box.open(token, aad=ROW_AAD) == API_KEY
    assert token.startswith(f"v1.{box.key_id}.")
    assert API_KEY not in token
    # A fresh nonce each time: equal keys do not give equal tokens.
    assert box.seal(API_KEY, aad=ROW_AAD) != token


def test_unicode_and_empty_secrets_round_trip(box: SecretBox) -> None:
    for secret in ("", "clé-秘密-🔑"):
        assert box.open(box.seal(secret, aad=ROW_AAD), aad=ROW_AAD) == secret


@pytest.mark.parametrize(
    "other_aad",
    [
        secret_aad("ai_provider", "prov_2", "user_ann", "api_key"),
        secret_aad("ai_provider", "prov_1", "user_bob", "api_key"),
        secret_aad("ai_provider", "prov_1", "user_ann", "provider_config"),
        secret_aad("session", "prov_1", "user_ann", "api_key"),
    ],
    ids=["other row", "other owner", "other column", "other table"],
)
def test_a_sealed_key_copied_to_another_row_or_owner_does_not_open(
    box: SecretBox, other_aad: str
) -> None:
    token = box.seal(API_KEY, aad=ROW_AAD)

    with pytest.raises(SecretError) as caught:
        box.open(token, aad=other_aad)

    assert caught.value.details["reason"] == "integrity"
    assert API_KEY not in str(caught.value)


def test_the_aad_parts_cannot_be_shifted_into_each_other() -> None:
    assert secret_aad("t", "1:2", "3", "c") != secret_aad("t", "1", "2:3", "c")
    assert secret_aad("t", 7, 8, "c") == secret_aad("t", "7", "8", "c")


def test_an_altered_token_fails_and_never_shows_the_secret(box: SecretBox) -> None:
    token = box.seal(API_KEY, aad=ROW_AAD)
    header, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[20] ^= 0x01
    altered = header + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    for bad in (altered, flip_last_character(token), token[:30], "v1." + box.key_id + ".!!"):
        with pytest.raises(SecretError) as caught:
            box.open(bad, aad=ROW_AAD)
        error = caught.value
        assert isinstance(error, OpenWriteError)
        assert (error.status, error.code) == (500, "secret_undecryptable")
        assert API_KEY not in error.message and API_KEY not in repr(error.details)


def test_a_token_that_is_not_ours_is_malformed(box: SecretBox) -> None:
    for bad in ("", "plaintext-key", "v2.abc.def", "v1.only-two"):
        with pytest.raises(SecretError) as caught:
            box.open(bad, aad=ROW_AAD)
        assert caught.value.details["reason"] == "malformed"


def test_a_key_sealed_under_another_server_key_says_so(box: SecretBox) -> None:
    other = SecretBox(ServerKey.generate())
    token = other.seal(API_KEY, aad=ROW_AAD)

    with pytest.raises(SecretError) as caught:
        box.open(token, aad=ROW_AAD)

    assert caught.value.details == {
        "reason": "wrong_key",
        "sealed_with": other.key_id,
        "key_id": box.key_id,
    }
    # Relabelling the token with our key id does not help: the header is authenticated.
    relabelled = token.replace(other.key_id, box.key_id, 1)
    with pytest.raises(SecretError) as caught:
        box.open(relabelled, aad=ROW_AAD)
    assert caught.value.details["reason"] == "integrity"


def test_the_verifier_tells_the_right_server_key_from_a_wrong_one(box: SecretBox) -> None:
    verifier = box.make_verifier()

    assert box.verify(verifier)
    assert SecretBox(ServerKey(bytes(32))).verify(verifier) is False
    assert not SecretBox(ServerKey.generate()).verify(verifier)
    assert not box.verify(flip_last_character(verifier))
    assert not box.verify(box.seal("openwrite-key-check", aad=ROW_AAD))
    assert token_key_id(verifier) == box.key_id


def test_key_hash_spots_the_same_api_key_added_twice_without_revealing_it() -> None:
    key = ServerKey.generate()
    box, same_server = SecretBox(key), SecretBox(ServerKey(key.raw))

    digest = box.key_hash(API_KEY)

    assert digest == same_server.key_hash(API_KEY)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != box.key_hash(API_KEY + "x")
    assert digest != SecretBox(ServerKey.generate()).key_hash(API_KEY)
    assert API_KEY not in digest


def test_the_hint_shows_the_last_four_characters_of_a_real_key() -> None:
    assert key_hint(API_KEY) == "fG0h"
    assert key_hint("sk-1234567890abcd") == "abcd"


@pytest.mark.parametrize(
    ("key", "hint"),
    [("", ""), ("abc", ""), ("abcd", "d"), ("abcdefg", "g"), ("abcdefgh", "gh"), ("a" * 15, "aaa")],
)
def test_the_hint_of_a_short_key_reveals_at_most_a_quarter_of_it(key: str, hint: str) -> None:
    assert key_hint(key) == hint


def test_rotation_moves_a_secret_to_the_new_server_key_and_can_be_rerun() -> None:
    old, new = SecretBox(ServerKey.generate()), SecretBox(ServerKey.generate())
    token = old.seal(API_KEY, aad=ROW_AAD)

    rotated = rotate(old, new, token, aad=ROW_AAD)

    assert new.open(rotated, aad=ROW_AAD) == API_KEY
    assert token_key_id(rotated) == new.key_id
    with pytest.raises(SecretError):
        old.open(rotated, aad=ROW_AAD)
    # An interrupted rotation run again leaves already-moved secrets as they are.
    assert rotate(old, new, rotated, aad=ROW_AAD) == rotated


def test_rotation_refuses_a_secret_that_does_not_belong_to_the_row() -> None:
    old, new = SecretBox(ServerKey.generate()), SecretBox(ServerKey.generate())
    token = old.seal(API_KEY, aad=ROW_AAD)
    other_row = secret_aad("ai_provider", "prov_2", "user_ann", "api_key")

    with pytest.raises(SecretError):
        rotate(old, new, token, aad=other_row)


def test_first_start_creates_a_private_key_file_and_later_starts_reuse_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = load_server_key(data_dir, None)
    again = load_server_key(data_dir, None)

    path = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.key_id == first.key_id and again.raw == first.raw
    assert path.read_text().strip() == first.to_text()
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]


def test_two_servers_starting_at_once_end_up_with_one_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def start() -> str:
        barrier.wait()
        return load_server_key(tmp_path, None).key_id

    with ThreadPoolExecutor(8) as pool:
        key_ids = set(pool.map(lambda _: start(), range(8)))

    assert len(key_ids) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_server_key(tmp_path, None)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)

    with pytest.raises(ServerKeyError) as caught:
        load_server_key(tmp_path, None)

    assert "chmod 600" in caught.value.message
    assert caught.value.details["mode"] == "0644"


@pytest.mark.parametrize(
    "content",
    [base64.urlsafe_b64encode(os.urandom(16)).decode(), "not base64 at all!", ""],
    ids=["16 bytes", "garbage", "empty"],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text(content)
    path.chmod(0o600)

    with pytest.raises(ServerKeyError) as caught:
        load_server_key(tmp_path, None)

    assert str(path) in caught.value.message


def test_the_environment_key_wins_and_no_file_is_written(tmp_path: Path) -> None:
    key = ServerKey.generate()

    loaded = load_server_key(tmp_path, key.to_text())
    unpadded = load_server_key(tmp_path, key.to_text().rstrip("=") + "\n")

    assert loaded.raw == key.raw == unpadded.raw
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_an_empty_environment_variable_falls_back_to_the_key_file(tmp_path: Path) -> None:
    key = load_server_key(tmp_path, "")

    assert (tmp_path / KEY_FILE_NAME).exists()
    assert load_server_key(tmp_path, "  ").raw == key.raw


@pytest.mark.parametrize(
    "value",
    ["correct horse battery staple", base64.urlsafe_b64encode(os.urandom(31)).decode()],
    ids=["not base64", "31 bytes"],
)
def test_a_bad_environment_key_is_a_clear_start_up_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ServerKeyError) as caught:
        load_server_key(tmp_path, value)

    assert "OPENWRITE_SECRET_KEY" in caught.value.message
    assert caught.value.code == "server_key_invalid"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_the_server_key_never_shows_itself_in_a_repr() -> None:
    key = ServerKey.generate()

    assert key.to_text() not in repr(key)
    assert key.raw.hex() not in repr(SecretBox(key))
    assert len(key.key_id) == 16
