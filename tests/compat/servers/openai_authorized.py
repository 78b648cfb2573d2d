from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import litserve as ls


class AuthedChatAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda messages: "echo: " + messages[-1]["content"]

    def predict(self, messages):
        yield self.model(messages)

    def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer())):
        if auth.credentials != "secret":
            raise HTTPException(status_code=401, detail="Bad token")


if __name__ == "__main__":
    server = ls.LitServer(AuthedChatAPI(spec=ls.OpenAISpec()))
    server.run(port=8000)
