from pathlib import Path

import litserve as ls


class HealthAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}

    def health(self) -> bool:
        # unhealthy while an operator has put the server in maintenance
        return not Path("maintenance").exists()


if __name__ == "__main__":
    server = ls.LitServer(HealthAPI(), accelerator="cpu")
    server.run(port=8000)
