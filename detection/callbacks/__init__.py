"""Signed callbacks: a job may name a URL that hears its status JSON when it ends.

The web process owns them: it checks the URL when the job is accepted (``targets``), records the
delivery beside the job (``<sid>.callback.json``, written before the job is queued, so that an
accepted job's callback is never lost), and its ``Deliverer`` thread posts the job's status once
it is done or failed, signed (``signing``), through a connection pinned to the address it checked
(``sender``), retried with back-off for a bounded time. Workers never wait on a receiver.
"""
