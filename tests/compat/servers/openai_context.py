import litserve as ls


class OpenAILitAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda prompt: prompt[-1]["content"]

    def predict(self, prompt, context):
        temperature = context.get("temperature", 1.0)
        yield f"{self.model(prompt)} at temperature {temperature}"


if __name__ == "__main__":
    server = ls.LitServer(OpenAILitAPI(), spec=ls.OpenAISpec())
    server.run(port=8000)
