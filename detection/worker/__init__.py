"""The worker side: the daemon, the supervisor and the spool's workers, the RQ worker, and the
models they run."""
