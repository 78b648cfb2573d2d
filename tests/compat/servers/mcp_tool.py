from pydantic import BaseModel

import litserve as ls
from litserve.mcp import MCP


class TextRequest(BaseModel):
    text: str


class WordCountAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda text: len(text.split())

    def decode_request(self, request: TextRequest):
        return request.text

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"words": output}


if __name__ == "__main__":
    api = WordCountAPI(mcp=MCP(description="Counts the words in a text"))
    server = ls.LitServer(api)
    server.run(port=8000)
