"""The HTTP service: FastAPI on uvicorn, ONNX Runtime behind a dynamic batcher. No torch.

app.py            create_app(): lifespan, routers, middleware
state.py          the loaded bundle, model, batcher, decode pool and readiness
batcher.py        dynamic batching into one ONNX Runtime run per batch
threads.py        the small thread pool for decoding and inference
inference.py      POST /classify and POST /clean (via model.classifying / model.cleaning)
health.py         GET /healthz and GET /readyz;  model_info.py: GET /model
metrics.py        Prometheus metrics and their middleware;  metrics_route.py: GET /metrics
multipart.py      reading uploads within limits;  body_limit.py: 413 while the body streams
auth.py           optional API keys;  errors.py: every error -> one JSON shape
schemas.py        response bodies;  openapi.py: the contract, openapi.yaml
server.py         run_server(): what `labelclean serve` calls
"""
