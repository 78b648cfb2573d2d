"""Ray Serve in front of litserve: ``create_app`` as a Ray Serve deployment's ingress.

A recipe, not a litserve backend: each Ray Serve replica is a whole litserve server (its own worker
processes, queue, batching and /metrics), and Ray Serve routes requests between replicas.

    pip install "ray[serve]"
    serve run examples.ray_serve:deployment          # from the repository root
    curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"input": 4.0}'

Caveats (docs/scale-out.md#8-ray-serve):
- ``max_ongoing_requests`` caps what Ray Serve sends one replica at once (default 5): raise it to the
  replica's capacity (workers x max_batch_size x max_concurrency) plus queue headroom, or Ray Serve,
  not litserve, decides the batch sizes.
- ``/metrics`` is each replica's own; Ray Serve's proxy answers from one replica at a time.
- The ``LitAPI`` class must be importable on the replica by its module name: litserve spawns its
  workers, which import it. Keep it in a module (here, this file run as ``examples.ray_serve``,
  not as ``__main__``) and ship that module with ``runtime_env={"working_dir": "."}`` on a cluster.
"""

from ray import serve

import litserve as ls


class SquareAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}


WORKERS = 2


def build_app() -> ls.LitApp:
    """Evaluated on each replica (nothing is pickled but this function): one litserve app per replica."""
    return ls.create_app(SquareAPI(), accelerator="cpu", devices=1, workers_per_device=WORKERS, timeout=30)


@serve.deployment(num_replicas=2, max_ongoing_requests=WORKERS * 8)
@serve.ingress(build_app)  # create_app's app, unchanged: its lifespan starts the workers in each replica
class LitServeDeployment:
    pass


deployment = LitServeDeployment.bind()
