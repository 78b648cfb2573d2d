import litserve as ls

if __name__ == "__main__":
    api = ls.test_examples.SimpleBatchedAPI(max_batch_size=4, batch_timeout=0.05)
    server = ls.LitServer(api, accelerator="cpu")
    server.run(port=8000)
