"""The benchmark harness, in three parts: targets (the servers under test and their life),
load generation (wrk for ``/predict``, an SSE client for OpenAI streams) and reporting (medians,
tables, the JSON record). ``run.py`` and ``bench_openai.py`` are thin drivers over it."""
