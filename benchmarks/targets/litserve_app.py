"""Our target: the same workload served by litserve (server process + inference worker).

Run: python benchmarks/targets/litserve_app.py PORT   (or PORT=... in the environment)

Everything that starts the server stays under ``if __name__ == "__main__":`` because
litserve spawns its worker processes, and a spawned process re-imports this module.
"""

import os
import sys
from typing import Any

import litserve as ls


class API(ls.LitAPI):
    """x -> x**2, the same trivial "model" as the Starlette and FastAPI targets."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: dict[str, Any]) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"output": output}


def port_from_args() -> int:
    """Port from argv[1], else $PORT, so the harness can pick a free one."""
    return int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"])


if __name__ == "__main__":
    server = ls.LitServer(API(), accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(
        host="127.0.0.1", port=port_from_args(), generate_client_file=False, log_level="warning", access_log=False
    )
