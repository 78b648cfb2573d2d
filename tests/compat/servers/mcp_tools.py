from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import litserve as ls
from litserve.mcp import MCP


class TextRequest(BaseModel):
    text: str


class Sentiment(BaseModel):
    label: str
    score: float


class Numbers(BaseModel):
    values: list[float]


class SentimentAPI(ls.LitAPI):
    def setup(self, device):
        positive = {"good", "great", "fine"}
        self.model = lambda words: sum(w in positive for w in words) / max(len(words), 1)

    def decode_request(self, request: TextRequest):
        return request.text.lower().split()

    def predict(self, words):
        return self.model(words)

    def encode_response(self, score) -> Sentiment:
        return Sentiment(label="positive" if score >= 0.5 else "negative", score=score)


class AddAPI(ls.LitAPI):
    """Adds numbers."""

    def decode_request(self, request: Numbers):
        if not request.values:
            raise HTTPException(status_code=422, detail="give at least one number")
        return request.values

    def predict(self, values):
        return sum(values)

    def encode_response(self, total):
        return {"sum": total}


class TableAPI(ls.LitAPI):
    """Writes a table of squares as CSV."""

    def decode_request(self, request: Numbers):
        return request.values

    def predict(self, values):
        return [(v, v * v) for v in values]

    def encode_response(self, rows):
        lines = (f"{v:g},{sq:g}\n" for v, sq in rows)
        return StreamingResponse(lines, media_type="text/csv")


if __name__ == "__main__":
    server = ls.LitServer(
        [
            SentimentAPI(api_path="/sentiment", mcp=MCP(description="Tells whether a text is positive")),
            AddAPI(api_path="/add", mcp=MCP()),
            TableAPI(api_path="/table", mcp=MCP()),
        ],
        accelerator="cpu",
    )
    server.run(port=8000)
