"""What is learned: datasets, partitions, models and metrics.

`tasks` imports nothing else of the project, so both the server and the clients can rely on it.
"""
