"""The HTTP process (FastAPI on uvicorn): reads requests, checks keys and limits, hands images to
the inference process and answers. Imports every other room; none imports it.

app.py            create_app(): lifespan, routers, middleware
state.py          what the process holds: bundle metadata, readiness, the inference process
server.py         run_server(): what `labelclean serve` calls, with one worker or N
classify.py       POST /classify and POST /clean: upload in, the inference process's body out
jobs.py           POST/GET/DELETE /jobs...: validate, create in Redis, status, results CSV
health.py         GET /healthz and GET /readyz;  model_info.py: GET /model;  reload.py: reload
metrics.py        Prometheus metrics and their middleware;  metrics_route.py: GET /metrics
label_studio.py   Label Studio's ML backend under /label-studio (label_studio_training.py: its
                  Start Training and the retraining jobs' state)
docs.py           GET /docs and /openapi.json;  openapi.py: openapi.yaml, narrowed per server;
                  contract.py: the document generated from the app
multipart.py      reading uploads within limits;  body_limit.py: 413 while the body streams
auth.py           optional API keys;  schemas.py: response bodies
"""
