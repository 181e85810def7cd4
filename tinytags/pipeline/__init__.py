"""The Spark side of each job: plans, tasks and their results; the entry points in jobs/ call these."""
