"""Publishing and loading resnet18 weights: the local artifact store vs S3 (moto's server).

The weights are a real trainserve weights file (safetensors with its model card) of an
untrained torchvision resnet18 for 3x32x32 inputs and 10 classes, about 45 MB. Both stores
run side by side in one process, taking turns, --repeat times:

- publish: `store.put(weights_key, bytes)`: the local store writes a temp file, fsyncs it and
  renames it (and fsyncs the folder); the S3 store sends one PutObject with its MD5, then a
  HEAD checks the size and sha256 (what a publish waits for before the version is recorded);
- load: what the API does for a prediction's first use of a version: `store.get` + sha256
  check against the row + `deserialize_model` (build the module, load the tensors, eval).
  The fetch alone (get + sha256) is shown too.

S3 is moto's server mode in a thread of this process on a loopback port, over HTTP: no network
latency or bandwidth limit, and moto shares this process's interpreter, so its figures are a
floor for the protocol's and boto3's overhead, not a forecast for a real bucket.

    python bench/artifacts.py                 # 5 rounds
    python bench/artifacts.py --repeat 10
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.artifacts import LocalArtifactStore, weights_key  # noqa: E402
from app.core.s3 import S3ArtifactStore  # noqa: E402
from models.catalogue import get_architecture  # noqa: E402
from models.files import sha256_hex  # noqa: E402
from models.params import build_config  # noqa: E402
from models.weights_file import ModelCard, deserialize_model, serialize_model  # noqa: E402
from tests.e2e.s3 import CREDENTIALS, moto_s3  # noqa: E402


def resnet18_weights() -> bytes:
    arch = get_architecture("resnet18")
    params = dataclasses.asdict(build_config(arch.config_cls, {}, owner=arch.name))
    card = ModelCard(
        architecture="resnet18",
        architecture_params=params,
        input_shape=[3, 32, 32],
        output_size=10,
        task="classification",
        loss="cross_entropy",
        dataset="bench",
        input_stats={},
        classes=[str(i) for i in range(10)],
    )
    return serialize_model(card.build_module(), card)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(CREDENTIALS)

    data = resnet18_weights()
    sha256 = sha256_hex(data)
    print(f"resnet18 weights: {len(data) / 1e6:.1f} MB")

    with moto_s3() as server, tempfile.TemporaryDirectory() as tmp:
        stores = {
            "local": LocalArtifactStore(Path(tmp)),
            "s3 (moto)": S3ArtifactStore(
                server.new_bucket(), "bench", endpoint_url=server.endpoint
            ),
        }
        times: dict[str, dict[str, list[float]]] = {
            name: {"publish": [], "fetch": [], "load": []} for name in stores
        }
        for round_ in range(args.repeat):
            for name, store in stores.items():
                key = weights_key("bench", round_ + 1)
                times[name]["publish"].append(timed(lambda s=store, k=key: s.put(k, data)))

                def fetch(s=store, k=key) -> bytes:
                    got = s.get(k)
                    assert sha256_hex(got) == sha256
                    return got

                times[name]["fetch"].append(timed(fetch))
                times[name]["load"].append(timed(lambda f=fetch: deserialize_model(f())))

    print(f"\n{args.repeat} rounds, median (min) in ms\n")
    print("| store | publish | fetch (get + sha256) | load (fetch + build + load tensors) |")
    print("| --- | --- | --- | --- |")
    for name, measured in times.items():
        cells = [
            f"{statistics.median(v) * 1e3:.0f} ({min(v) * 1e3:.0f})" for v in measured.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
