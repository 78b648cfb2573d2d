"""A seed-style torch model that reports where it ran (imported by spawned workers)."""

from __future__ import annotations

import os

import litserve as ls


class DeviceAPI(ls.LitAPI):
    def setup(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.model = torch.nn.Linear(1, 1).to(device)
        with torch.no_grad():
            self.model.weight.fill_(2.0)
            self.model.bias.fill_(1.0)

    def decode_request(self, request):
        return self.torch.tensor([[float(request["input"])]], device=self.device)

    def predict(self, x):
        with self.torch.no_grad():
            return self.model(x)

    def encode_response(self, output):
        return {"output": float(output), "tensor_device": str(output.device), "pid": os.getpid()}
