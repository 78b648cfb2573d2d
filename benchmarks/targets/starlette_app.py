"""Baseline target: the same workload in raw Starlette, the floor any framework pays.

Run: python benchmarks/targets/starlette_app.py PORT   (or PORT=... in the environment)
"""

import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def predict(request: Request) -> JSONResponse:
    """Decode {"input": x}, answer {"output": x**2} — no validation, no workers."""
    body = await request.json()
    x = body["input"]
    return JSONResponse({"output": x**2})


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])


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
