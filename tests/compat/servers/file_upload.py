import litserve as ls


class FileAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda data: data.upper()

    def decode_request(self, request):
        upload = request["document"]
        return {"name": upload.filename, "type": upload.content_type, "data": upload.file.read(), "tag": request["tag"]}

    def predict(self, x):
        return {**x, "data": self.model(x["data"])}

    def encode_response(self, output):
        return {
            "filename": output["name"],
            "content_type": output["type"],
            "size": len(output["data"]),
            "upper": output["data"].decode(),
            "tag": output["tag"],
        }


if __name__ == "__main__":
    server = ls.LitServer(FileAPI(), max_payload_size="1MB")
    server.run(port=8000)
