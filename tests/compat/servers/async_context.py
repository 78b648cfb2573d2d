import asyncio

import litserve as ls


class PrintLogger(ls.Logger):
    def process(self, key, value):
        print(f"async log {key}={value}", flush=True)


class AsyncContextAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x * 2

    async def decode_request(self, request, context):
        context["request"] = request["input"]
        return request["input"]

    async def predict(self, x, context):
        await asyncio.sleep(0.01)
        self.log("doubled", x)
        return self.model(x)

    async def encode_response(self, output, context):
        return {"output": output, "input": context["request"]}


if __name__ == "__main__":
    api = AsyncContextAPI(enable_async=True)
    server = ls.LitServer(api, loggers=PrintLogger())
    server.run(port=8000)
