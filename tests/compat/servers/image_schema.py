from PIL import Image

import litserve as ls
from litserve.schema.image import ImageInput, ImageOutput


class ImageAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda image: image.transpose(Image.FLIP_LEFT_RIGHT)

    def decode_request(self, request: ImageInput):
        return request.get_image()

    def predict(self, image):
        return self.model(image)

    def encode_response(self, output) -> ImageOutput:
        return ImageOutput(image=output)


if __name__ == "__main__":
    server = ls.LitServer(ImageAPI(), accelerator="auto")
    server.run(port=8000)
