"""Jobs, shared by web and workers: what a job is, where its records live, and the queues that
move it.

    job.py        the job: id, kind, options, state, status (one flat JSON shape)
    kinds.py      what differs between kinds outside the worker: time limits, progress, fields
    records.py    a job's records in uploads/ (result, failure, drawing, progress), the only
                  code that writes or reads them; layout.py names them
    queue.py      the queue the web process uses (JobQueue), and the factory that picks one
    spool.py      the queue as files in uploads/.queue (one machine; the default)
    rq_queue.py   the queue on Redis + RQ (workers on any host)
    pixels.py     decoded pixels handed from web to a spool worker on the same machine
    storage.py    pruning uploads/ and the web's byte budget
    errors.py     queue full, Redis away, disk full
    atomic.py, locks.py, watch.py, boot.py   atomic writes, locks held by live processes,
                  waiting for renames, and which boot of the machine this is
"""
