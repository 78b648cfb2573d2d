"""A PyTorch model served from every GPU: one worker per device, each with its own copy of the model.

Needs torch and 4 visible CUDA GPUs, as written. On a machine with fewer, change ``devices`` (an int,
or a list of GPU ids such as ``[0, 3]``); with none, use ``accelerator="cpu"`` (or ``"auto"``, which
picks CUDA when NVML reports a GPU and the CPU otherwise). ``accelerator="cuda"`` on a machine without
a visible GPU refuses to start with a ConfigurationError rather than silently running on the CPU.
"""

import torch
import torch.nn as nn

import litserve as ls


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.linear.weight.data.fill_(2.0)
        self.linear.bias.data.fill_(1.0)

    def forward(self, x):
        return self.linear(x)


class SimpleLitAPI(ls.LitAPI):
    def setup(self, device):
        # move the model to the correct device
        # keep track of the device for moving data accordingly
        self.model = Linear().to(device)
        self.device = device

    def decode_request(self, request):
        # get the input and create a 1D tensor on the correct device
        content = request["input"]
        return torch.tensor([content], device=self.device)

    def predict(self, x):
        # the model expects a batch dimension, so create it
        return self.model(x[None, :])

    def encode_response(self, output):
        # float will take the output value directly onto CPU memory
        return {"output": float(output)}


if __name__ == "__main__":
    # accelerator="cuda", devices=4 will lead to 4 workers serving the
    # model from "cuda:0", "cuda:1", "cuda:2", "cuda:3" respectively
    server = ls.LitServer(SimpleLitAPI(), accelerator="cuda", devices=4)
    # devices=[0, 3] serves from "cuda:0" and "cuda:3" only;
    # workers_per_device=2 loads two copies of the model on each GPU:
    # server = ls.LitServer(SimpleLitAPI(), accelerator="cuda", devices=4, workers_per_device=2)
    server.run(port=8000)
