"""The inference process: what the HTTP processes hand their images to, as Triton's front end
hands requests to its model instances. Imports nothing of the other rooms.

process.py   the inference process's main: requests in, response bodies out
client.py    the HTTP process's side: starts, feeds and restarts it (or connects to a shared one)
shared.py    `serve --workers N`: one inference process for all workers, restarted
channel.py   pickled frames over the socket between the two processes
engine.py    the model there: session, warm-up, batcher, decode threads, the two pipelines
batcher.py   dynamic batching into one ONNX Runtime run per batch
threads.py   the small thread pool for decoding and inference
"""
