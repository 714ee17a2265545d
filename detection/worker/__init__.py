"""The worker side: the detection daemon, the worker processes it keeps, and what they run.

    daemon.py        the daemon (python-daemon): one per uploads/, holding its lock
    supervisor.py    the daemon's loop: keeps a worker process per slot, replaces dead or hung ones
    processes.py     a worker process, its slot and back-off
    protocol.py      what a worker tells its supervisor (typed events on a pipe)
    deadlines.py     how long a worker's step may take
    spool_worker.py  a worker on the spool (the daemon's child)
    rq_worker.py     a worker on Redis + RQ (any host)
    handlers/        what a worker does with each kind of job (detect, download)
    model_cache.py   loaded models, kept warm
    detectors/       the detector backends (mmdet, MTCNN faces) and ONNX Runtime's networks
    drawing.py       boxes, masks, labels and landmarks onto the image
"""
