import litserve as ls

if __name__ == "__main__":
    api = ls.test_examples.OpenAIBatchContext(max_batch_size=2, batch_timeout=0.05)
    server = ls.LitServer(api, spec=ls.OpenAISpec())
    server.run(port=8000)
