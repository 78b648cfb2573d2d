from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import litserve as ls


class CountingLogger(ls.Logger):
    def __init__(self):
        super().__init__()
        self.counts = {}

        async def show(request):
            return PlainTextResponse("".join(f"{k} {v}\n" for k, v in sorted(self.counts.items())))

        self.mount("/log-counts", Starlette(routes=[Route("/", show)]))

    def process(self, key, value):
        self.counts[key] = self.counts.get(key, 0) + value


class PrintLogger(ls.Logger):
    def process(self, key, value):
        print(f"logged {key}={value}", flush=True)


class CountingAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda text: len(text.split())

    def decode_request(self, request):
        return request["text"]

    def predict(self, text):
        words = self.model(text)
        self.log("words", words)
        return words

    def encode_response(self, output):
        return {"words": output}


if __name__ == "__main__":
    server = ls.LitServer(CountingAPI(), loggers=[CountingLogger(), PrintLogger()])
    server.run(port=8000)
