import litserve as ls

if __name__ == "__main__":
    server = ls.LitServer(ls.test_examples.SimpleLitAPI(), accelerator="cpu")
    server.run(port=8000)
