"""The review side: what people look at and what comes back from them. Imports the jobs room
(file names, errors.csv's header, the Redis client), never http/.

queue.py        the ranked review queue of a data split: every (image, label) pair by issue score
html.py         the queue as static HTML pages
suggest.py      which images to verify next (`labelclean suggest-verify`, `review --order suggest`)
label_studio/   the queue as a Label Studio project, and Label Studio's reviews as verified labels
retraining.py   retraining jobs in Redis (Label Studio's Start Training)
retrain_worker.py  `labelclean train-worker`: runs them (`labelclean train` in a child process)
"""
