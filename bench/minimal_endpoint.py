"""The baseline of bench/predict.py: the endpoint a user would write by hand.

FastAPI, a plain `def` handler (FastAPI runs it in its thread pool), one forward per request,
uvicorn with its defaults. It loads the same weights files as the service under test and uses
the same `Predictor` (standardise -> forward under inference_mode -> original units), so both
answer the same numbers. No key, no limits, no batching.

    python bench/minimal_endpoint.py PORT NAME=WEIGHTS.safetensors [NAME=...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from models.predictor import Predictor  # noqa: E402


class Body(BaseModel):
    inputs: list[Any]


def make_app(weights: dict[str, Path]) -> FastAPI:
    predictors = {name: Predictor.from_bytes(path.read_bytes()) for name, path in weights.items()}
    app = FastAPI()

    @app.post("/v1/models/{name}/predict")
    def predict(name: str, body: Body) -> dict[str, Any]:
        predictor = predictors[name]
        samples = np.asarray(body.inputs, dtype=np.float32).reshape(-1, *predictor.input_shape)
        result = predictor.predict(samples)
        return {"predictions": result.predictions, "probabilities": result.probabilities}

    return app


def main() -> None:
    port = int(sys.argv[1])
    weights = dict(arg.split("=", 1) for arg in sys.argv[2:])
    app = make_app({name: Path(path) for name, path in weights.items()})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
