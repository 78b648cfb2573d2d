"""Reference target: the same workload in FastAPI with pydantic request validation.

Run: python benchmarks/targets/fastapi_app.py PORT   (or PORT=... in the environment)
"""

import os
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """Request body; validation is part of what FastAPI users pay for."""

    input: float


app = FastAPI()


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, float]:
    """Answer {"output": x**2}; async so no threadpool hop, like the Starlette target."""
    return {"output": request.input**2}


def port_from_args() -> int:
    """Port from argv[1], else $PORT, so the harness can pick a free one."""
    return int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"])


if __name__ == "__main__":
    # loop/http "auto" pick uvloop/httptools when importable: identical for all targets.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port_from_args(),
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
    )
