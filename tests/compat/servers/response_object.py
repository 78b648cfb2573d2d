from fastapi import Response

import litserve as ls


class CSVAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda n: [(i, i * i) for i in range(n)]

    def decode_request(self, request):
        return request["rows"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        body = "n,square\n" + "".join(f"{n},{sq}\n" for n, sq in output)
        return Response(
            content=body,
            status_code=201,
            media_type="text/csv",
            headers={"Content-Disposition": "attachment; filename=squares.csv", "X-Rows": str(len(output))},
        )


if __name__ == "__main__":
    server = ls.LitServer(CSVAPI(), accelerator="cpu")
    server.run(port=8000)
