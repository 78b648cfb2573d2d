"""The smallest litserve server: x -> x**2 on the CPU.

Run it, then in another terminal ``python3 client.py`` (written next to where you started the server),
or ``curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"input": 4.0}'``.
"""

import litserve as ls


class SimpleLitAPI(ls.LitAPI):
    def setup(self, device):
        """
        Setup the model so it can be called in `predict`.
        """
        self.model = lambda x: x**2

    def decode_request(self, request):
        """
        Convert the request payload to your model input.
        """
        return request["input"]

    def predict(self, x):
        """
        Run the model on the input and return the output.
        """
        return self.model(x)

    def encode_response(self, output):
        """
        Convert the model output to a response payload.
        """
        return {"output": output}


# The guard matters: workers are spawned processes that import this file again, and must not start
# a server of their own.
if __name__ == "__main__":
    api = SimpleLitAPI()
    server = ls.LitServer(api, accelerator="cpu")
    server.run(port=8000)
