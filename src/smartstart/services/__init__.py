"""The running platform: the database's lifecycle (database.py), the Brain's processes
(brain.py), and the one way SmartStart forks and watches a process of its own (process.py)."""
