import litserve as ls

if __name__ == "__main__":
    server = ls.LitServer(ls.test_examples.TestAPIWithToolCalls(), spec=ls.OpenAISpec())
    server.run(port=8000)
