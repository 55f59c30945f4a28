"""Label Studio: the review queue as its project, its ML backend protocol's payloads (the routes
are service.http.label_studio, under /label-studio, the URL a user gives Label Studio), and the
reviews that come back from it as human-verified labels.

    GET  /label-studio/health    is the backend up (Label Studio's connection check)
    POST /label-studio/setup     the project's labeling config checked; answers model_version
    POST /label-studio/predict   many tasks -> one prediction per task, in order
    POST /label-studio/webhook   ANNOTATION(S)_CREATED / _UPDATED / ANNOTATIONS_DELETED:
                                 reviews -> Open Images human-label rows (START_TRAINING:
                                 a retraining job, service.review.retraining)

Modules: ``config`` (a labeling config's Choices -> the bundle's classes), ``images`` (a task's
image by its URL: Label Studio's uploads and local files, s3:// and file:// through the storage
layer), ``predictions`` (a cleaned image -> a Label Studio prediction), ``reviews`` (annotations
-> human-label rows, deduplicated; the store the webhook writes and ``labelclean import-reviews``
reads an export into), ``imports`` (`labelclean import-reviews`), ``export`` (`labelclean review
--format label-studio`: tasks, config, view). Torch-free.
"""
