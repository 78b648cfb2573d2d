"""Specs: an API shaped as a well-known HTTP interface (OpenAI's chat completions and embeddings).

A spec on a ``LitAPI`` replaces its ``/predict`` route with the interface's routes, validates requests
as that interface defines them, and turns what ``predict`` returns into the interface's responses.
"""
