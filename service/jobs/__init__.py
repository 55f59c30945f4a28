"""Bulk jobs (POST /jobs, `labelclean worker`, `labelclean clean`): Redis, buckets, no torch.
Imports the inference room (retry delays, the thread pool), never http/ or review/.

spec.py      a job's spec and options, checked before it is accepted
steps.py     the steps every runner shares: plan, load / clean / store a chunk, finalize
plan.py      the plan in flat memory (sorted_runs.py: the external sort behind it)
files.py     the job's files: the labels CSV, where each file lives, CSV rows as bytes
chunk.py     cleaning one chunk: read, decode and clean its images batch by batch
results.py   the end: every chunk joined into cleaned.csv, errors.csv and summary.json
leftovers.py what a job leaves besides its results, and removing it
offline.py   `labelclean clean`: a job in one process, without Redis
keys.py      Redis key names, limits, job ids and the client the modules share
store.py     job records and the atomic steps (scripts.py: their Lua); record.py: Job, JobState
owners.py    who owns a job: a keyed hash of the caller's API key
queue.py     the work stream: consumer group, reclaiming idle messages, dead letters
worker.py    `labelclean worker`: the model once, the message loop, heartbeat, signals, outages
handler.py   one message -> plan / clean chunk / finalize; failed tries retried, dead-lettered
upkeep.py    stale jobs fail, finished ones leave the indexes (run by the API process)
"""
