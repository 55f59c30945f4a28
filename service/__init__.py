"""The HTTP service, in two processes, neither with torch: the HTTP process (FastAPI on uvicorn)
reads requests, checks keys and limits and answers; the inference process decodes the images,
batches them for ONNX Runtime and writes the response bodies. ``serve --workers N`` runs N HTTP
processes (uvicorn workers) that share one inference process: one model, one dynamic batcher.

app.py            create_app(): lifespan, routers, middleware
state.py          what the HTTP process holds: bundle metadata, readiness, the inference process
backend_client.py starts, feeds and restarts the inference process (or connects to a shared one)
channel.py        pickled frames over the socket between the two processes
backend.py        the inference process's main: requests in, response bodies out
shared_inference.py  `serve --workers N`: one inference process for all workers, restarted
engine.py         the model there: session, warm-up, batcher, decode threads, the two pipelines
batcher.py        dynamic batching into one ONNX Runtime run per batch
threads.py        the small thread pool for decoding and inference
inference.py      POST /classify and POST /clean: upload in, the inference process's body out
health.py         GET /healthz and GET /readyz;  model_info.py: GET /model
metrics.py        Prometheus metrics and their middleware;  metrics_route.py: GET /metrics
multipart.py      reading uploads within limits;  body_limit.py: 413 while the body streams
auth.py           optional API keys;  errors.py: every error -> one JSON shape
schemas.py        response bodies;  openapi.py: the contract, openapi.yaml, and one server's
server.py         run_server(): what `labelclean serve` calls, with one worker or N

Bulk jobs (POST /jobs; Redis; no torch either):
jobs_api.py       POST/GET/DELETE /jobs...: validate, create in Redis, status, results CSV
job_store.py      job records in Redis and the atomic job steps: create, plan, chunk done, finish
job_scripts.py    the Lua scripts of those steps;  job_record.py: Job, JobState, reading a job hash
job_redis.py      key names, limits, job ids and the Redis client the job modules share
job_queue.py      the work stream: consumer group, reclaiming idle messages, dead letters
worker.py         `labelclean worker`: the model once, the message loop, heartbeat, signals, outages
job_handler.py    one message -> plan / clean chunk / finalize; failed tries retried, dead-lettered
"""
