from fastapi import Header, HTTPException
from pydantic import BaseModel

import litserve as ls
from litserve.mcp import MCP


class Numbers(BaseModel):
    values: list[float]


class SumAPI(ls.LitAPI):
    """Adds numbers."""

    def setup(self, device):
        self.model = sum

    def decode_request(self, request: Numbers):
        return request.values

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"sum": output}

    def authorize(self, x_tenant: str = Header(default="")):
        if x_tenant != "acme":
            raise HTTPException(status_code=403, detail="unknown tenant")


if __name__ == "__main__":
    server = ls.LitServer(SumAPI(mcp=MCP(name="add")))
    server.run(port=8000)
