import litserve as ls


class ContextAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request, context):
        context["input"] = request["input"]
        return request["input"]

    def predict(self, x, context):
        context["squared"] = self.model(x)
        return context["squared"] + 1

    def encode_response(self, output, context):
        return {"output": output, "input": context["input"], "squared": context["squared"]}


if __name__ == "__main__":
    server = ls.LitServer(ContextAPI(), accelerator="cpu")
    server.run(port=8000)
