"""Delivery: queueing deliveries at ingest, draining them in RQ jobs, sending, recording outcomes."""
