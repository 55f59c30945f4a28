"""The service, torch-free, in four rooms (each imports only the rooms before it, and the two
shared modules here):

errors.py     every error the service answers, with its HTTP status, and the one place that maps
              them to the JSON error body
failures.py   what a failure may say to a caller: the kind of problem, never the data behind it
inference/    the inference process: the bundle in ONNX Runtime, the dynamic batcher, decode
              threads, the process the HTTP workers share, and its client
jobs/         bulk jobs: the spec, the plan in flat memory, chunk cleaning, results, the Redis
              records, queue and scripts, the worker, the offline `labelclean clean`
review/       the review queue (ranked pairs, HTML, the Label Studio export), the images worth
              verifying, Label Studio's reviews as verified labels, retraining jobs from them
http/         the HTTP process: the FastAPI app, one router per resource (classify/clean, jobs,
              health, model, reload, metrics, docs, Label Studio), keys, limits, the contract

``serve --workers N`` runs N HTTP processes that share one inference process: one model, one
dynamic batcher.
"""
