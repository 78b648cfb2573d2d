"""Runs a LitServe-style server file unchanged, on the port a test chose.

``python run_server.py PORT path/to/server.py``: the file is executed as this process's ``__main__``
(so its ``if __name__ == "__main__":`` block runs and spawned workers re-import it as LitServe's
would), with one difference: ``LitServer.run`` listens on 127.0.0.1:PORT whatever port the file
names, so tests can run side by side.
"""

import sys

import litserve

port, path = int(sys.argv[1]), sys.argv[2]
_run = litserve.LitServer.run


def run(self, *args, **kwargs):
    kwargs.update(host="127.0.0.1", port=port)
    return _run(self, **kwargs)


litserve.LitServer.run = run
main = sys.modules["__main__"]
main.__file__ = path  # spawned workers re-import the server file, not this one
sys.argv = [path]
with open(path) as f:
    code = compile(f.read(), path, "exec")
exec(code, main.__dict__)
