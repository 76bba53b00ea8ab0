"""`rvm batch`: many conversions on a local worker pool or a Ray cluster. The driver (`driver`) hands jobs
(`jobs`: the job model, ledger and planning) to executor slots (`workers`, `ray_executor`); long clips run as
segments (`segments`); `bench` measures the executors."""
