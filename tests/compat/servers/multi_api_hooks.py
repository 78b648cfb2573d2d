import litserve as ls


class Recorder(ls.Logger):
    def process(self, key, value):
        print(f"log {key}={value}", flush=True)


class RequestCounter(ls.Callback):
    def on_request(self, active_requests, litserver):
        print("request seen", flush=True)


class SquareAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request, context):
        context["x"] = request["input"]
        return request["input"]

    def predict(self, x, context):
        return self.model(x)

    def encode_response(self, output, context):
        return {"output": output, "input": context["x"]}


class CubeAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**3

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        self.log("cube_input", x)
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}

    def health(self) -> bool:
        return True


if __name__ == "__main__":
    server = ls.LitServer(
        [SquareAPI(api_path="/square"), CubeAPI(api_path="/cube")],
        loggers=Recorder(),
        callbacks=[RequestCounter()],
    )
    server.run(port=8000)
