"""The artifact store's contract, run against both stores: the local directory, and S3 over
HTTP (moto's server mode on a loopback port); then what only S3 does (an outage, retries,
credentials kept out of messages) and the workers' cache."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from app.core.artifacts import (
    ArtifactMissing,
    LocalArtifactStore,
    StoreUnavailable,
    checkpoint_key,
    dataset_key,
    weights_key,
)
from app.core.cache import ArtifactCache
from app.core.s3 import S3ArtifactStore
from app.core.services import open_artifact_store
from app.core.settings import Settings
from models.files import sha256_hex
from tests.e2e.s3 import CREDENTIALS, MotoS3

SHA = "ab" * 32


def s3_store(server: MotoS3, bucket: str, prefix: str = "tenant", retry: float = 2.0):
    return S3ArtifactStore(bucket, prefix, endpoint_url=server.endpoint, retry_seconds=retry)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, aws_env):
    if request.param == "local":
        return LocalArtifactStore(tmp_path)
    server = request.getfixturevalue("s3")
    if not server.running:
        server.start()
    return s3_store(server, server.new_bucket())


# -- the contract, both stores ------------------------------------------------------------


def test_put_get_exists_delete(store):
    key = weights_key("house", 1)
    assert not store.exists(key)
    assert store.put(key, b"first") == sha256_hex(b"first")
    assert store.get(key) == b"first" and store.exists(key)
    assert store.put(key, b"second!") == sha256_hex(b"second!")
    assert store.get(key) == b"second!"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # absent: nothing happens
    with pytest.raises(ArtifactMissing):
        store.get(key)
    with pytest.raises(ArtifactMissing):
        store.open(key)


def test_list_by_prefix_is_sorted_and_exact(store):
    keys = [
        checkpoint_key("j2", 3),
        checkpoint_key("j1", 2),
        checkpoint_key("j1", 1),
        dataset_key(SHA),
        weights_key("m", 10),
        weights_key("m", 2),
        weights_key("mm", 1),
    ]
    for key in keys:
        store.put(key, key.encode())
    assert store.list("checkpoints/j1/") == [checkpoint_key("j1", 1), checkpoint_key("j1", 2)]
    assert store.list("weights/m/") == [weights_key("m", 10), weights_key("m", 2)]
    assert store.list("weights/m") == sorted(k for k in keys if k.startswith("weights/"))
    assert store.list("nothing/") == []
    assert store.list("") == sorted(keys)


def test_open_reads_what_was_there_when_opened(store):
    key = dataset_key(SHA)
    store.put(key, b"old bytes")
    with store.open(key) as handle:
        store.put(key, b"new bytes, longer")
        assert handle.read() == b"old bytes"
        handle.seek(0)
        assert handle.read(3) == b"old"
    assert store.get(key) == b"new bytes, longer"


@pytest.mark.parametrize("key", ["../escape", "a/../../b", ".hidden", "a//b", "", "a/.tmp", "a b"])
def test_keys_outside_the_scheme_are_refused(store, key):
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)


def test_readers_see_the_old_object_or_the_new_one_never_half(store):
    key = weights_key("race", 1)
    old, new = b"o" * 300_000, b"n" * 200_000
    store.put(key, old)
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(store.get(key))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(10):
            store.put(key, new if i % 2 == 0 else old)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert seen <= {old, new} and seen


def test_the_store_answers_its_check(store):
    store.check()
    assert store.where(weights_key("m", 1)).endswith("weights/m/v1.safetensors")


# -- S3 only -------------------------------------------------------------------------------


def test_objects_live_under_the_prefix_and_carry_their_sha256(s3, aws_env):
    bucket = s3.new_bucket()
    one, two = s3_store(s3, bucket, "one"), s3_store(s3, bucket, "two/deeper")
    one.put(weights_key("m", 1), b"one")
    two.put(weights_key("m", 1), b"two")
    assert one.get(weights_key("m", 1)) == b"one" and two.list("") == [weights_key("m", 1)]
    head = s3.client().head_object(Bucket=bucket, Key="two/deeper/weights/m/v1.safetensors")
    assert head["Metadata"]["sha256"] == sha256_hex(b"two")
    assert one.where(weights_key("m", 1)) == f"s3://{bucket}/one/weights/m/v1.safetensors"


def test_a_store_that_is_down_raises_a_message_naming_it_without_credentials(s3, aws_env, caplog):
    store = s3_store(s3, s3.new_bucket(), retry=0.5)
    store.put(dataset_key(SHA), b"kept")
    s3.stop()
    try:
        caplog.set_level(logging.DEBUG)
        started = time.monotonic()
        for call in (store.get, store.exists, store.open):
            with pytest.raises(StoreUnavailable) as raised:
                call(dataset_key(SHA))
            assert f"the artifact store {store.name} does not answer" in raised.value.detail
            assert raised.value.status_code == 503
        with pytest.raises(StoreUnavailable):
            store.check()
        assert time.monotonic() - started < 10  # bounded retries, then the error
        for secret in (CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]):
            assert secret not in caplog.text and secret not in raised.value.detail
        assert "retrying in" in caplog.text
    finally:
        s3.start()
    assert store.get(dataset_key(SHA)) == b"kept"  # nothing lost


def test_a_short_outage_is_ridden_out_by_retries(s3, aws_env):
    store = s3_store(s3, s3.new_bucket(), retry=20)
    store.put(dataset_key(SHA), b"kept")
    s3.stop()
    back = threading.Timer(1.5, s3.start)
    back.start()
    try:
        started = time.monotonic()
        assert store.get(dataset_key(SHA)) == b"kept"
        store.put(weights_key("m", 1), b"written after the outage")
        assert time.monotonic() - started >= 1.0
    finally:
        back.join()
    assert store.get(weights_key("m", 1)) == b"written after the outage"


def test_a_missing_bucket_is_named(s3, aws_env):
    store = s3_store(s3, "no-such-bucket-here", retry=0.2)
    with pytest.raises(StoreUnavailable, match="has no bucket 'no-such-bucket-here'"):
        store.check()
    with pytest.raises(StoreUnavailable, match="has no bucket"):
        store.put(weights_key("m", 1), b"x")


def test_settings_pick_the_store_and_keep_the_endpoint_out_of_their_repr(tmp_path, s3, aws_env):
    endpoint = s3.endpoint.replace("http://", "http://user:pw-secret@")
    settings = Settings(
        data_dir=tmp_path, artifacts_url="s3://bucket-x/some/prefix", s3_endpoint_url=endpoint
    )
    assert "pw-secret" not in repr(settings)
    built = open_artifact_store(settings.artifacts_url, tmp_path, settings.s3_endpoint_url)
    assert isinstance(built, S3ArtifactStore) and built.name == "s3://bucket-x/some/prefix/"
    local = open_artifact_store(f"file://{tmp_path}/elsewhere", tmp_path)
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "elsewhere"
    assert open_artifact_store(None, tmp_path).root == tmp_path
    for bad in ("s3://", "file://relative", "http://x/y", "ftp://h/p"):
        with pytest.raises(ValueError, match="TRAINSERVE_ARTIFACTS_URL must be"):
            Settings(data_dir=tmp_path, artifacts_url=bad)


# -- the workers' cache ---------------------------------------------------------------------


def test_the_cache_fetches_once_checks_hits_and_evicts_the_oldest(tmp_path):
    blobs = [bytes([i]) * 1000 for i in range(4)]
    shas = [sha256_hex(b) for b in blobs]
    cache = ArtifactCache(tmp_path / "cache", max_bytes=2500)
    fetched = []

    def fetch(i):
        def go():
            fetched.append(i)
            return blobs[i]

        return go

    assert cache.get(shas[0], fetch(0)) == blobs[0]
    assert cache.get(shas[0], fetch(0)) == blobs[0]
    assert fetched == [0] and (cache.hits, cache.misses) == (1, 1)
    (tmp_path / "cache" / shas[0]).write_bytes(b"damaged")
    assert cache.get(shas[0], fetch(0)) == blobs[0]  # a damaged hit is fetched again
    assert fetched == [0, 0]
    for i in (1, 2):
        time.sleep(0.02)
        cache.get(shas[i], fetch(i))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(shas[1:3])
    wrong = cache.get(shas[3], lambda: b"not what the row says")
    assert wrong == b"not what the row says"  # handed back for the caller to refuse...
    assert not (tmp_path / "cache" / shas[3]).exists()  # ...and never cached
