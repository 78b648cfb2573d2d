from fastapi import Request, Response

import litserve as ls


class AnnotatedAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x * 10

    def decode_request(self, request: Request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output) -> Response:
        return {"output": output}


if __name__ == "__main__":
    server = ls.LitServer(AnnotatedAPI(), accelerator="cpu")
    server.run(port=8000)
