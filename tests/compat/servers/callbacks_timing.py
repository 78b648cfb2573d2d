import time

import litserve as ls


class PredictionTimeLogger(ls.Callback):
    def on_before_predict(self, lit_api):
        self._start_time = time.perf_counter()

    def on_after_predict(self, lit_api):
        elapsed = time.perf_counter() - self._start_time
        print(f"Prediction took {elapsed:.2f} seconds", flush=True)


class LifecyclePrinter(ls.Callback):
    def on_before_setup(self, lit_api):
        print("before setup", type(lit_api).__name__, flush=True)

    def on_after_setup(self, lit_api):
        print("after setup", type(lit_api).__name__, flush=True)

    def on_before_decode_request(self, lit_api):
        print("before decode_request", flush=True)

    def on_after_encode_response(self, lit_api):
        print("after encode_response", flush=True)

    def on_server_start(self, litserver):
        print("server start", flush=True)

    def on_request(self, active_requests, litserver):
        print("request", flush=True)

    def on_response(self, litserver):
        print("response", flush=True)


if __name__ == "__main__":
    api = ls.test_examples.SimpleLitAPI()
    server = ls.LitServer(api, callbacks=[PredictionTimeLogger(), LifecyclePrinter()])
    server.run(port=8000)
